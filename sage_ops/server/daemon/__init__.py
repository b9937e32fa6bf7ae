"""The composition root: builds the server's parts, starts them and stops them in order; the
sockets, the pidfile and logging. The top layer: nothing below imports it."""

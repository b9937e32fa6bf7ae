"""The HTTP API (FastAPI): routes by resource and the auth gate. Routes format and call; the
rules they apply live below."""

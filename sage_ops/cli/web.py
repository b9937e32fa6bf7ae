"""`sage-ops web`: the web dashboard on loopback, served by this process as a client of the
daemon (as the TUI is). The daemon also serves it on its TCP listener (`daemon start --tcp`)."""

from __future__ import annotations

import ssl

import click

from . import Ctx, cli, pass_ctx


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Loopback port (default: any free one).")
@pass_ctx
def web(ctx: Ctx, port: int) -> None:
    """The web dashboard on loopback, with a one-time login link.

    \b
    Following the link logs that browser in with a token of your own rights
    for 12 h (revocable: sage-ops token list). Ctrl-C stops the server.
    To serve the team: sage-ops daemon start --tcp HOST:PORT --tls-cert ... and
    log in at https://HOST:PORT/ with a token.
    """
    from ..web.local import serve  # lazy: the rest of the CLI stays light

    address = ctx.target()[0]
    ctx.client().health_check()  # the daemon answers (else the usual one-line error, exit 3)
    verify: object = False if ctx.insecure else ssl.create_default_context(cafile=ctx.ca) if ctx.ca else True
    serve(address.split(",")[0], ctx.token, port, verify)

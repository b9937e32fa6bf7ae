"""`sage-ops tui`: the live terminal UI. Textual is imported only when the command runs, so the
rest of the CLI (and shell completion) never pays for it."""

from __future__ import annotations

import os

from . import Ctx, cli, pass_ctx


@cli.command()
@pass_ctx
def tui(ctx: Ctx) -> None:
    """The live terminal UI: jobs, logs, nodes and charts (press ? for the keys).

    \b
    Keys: enter details, / filter, 1-5 status, c cancel, r retry, n nodes, t charts,
    s submit, ctrl+p every command, q quit.
    """
    from ..tui.app import SageOpsApp  # lazy: the CLI stays free of textual

    address = ctx.address or os.environ.get("SAGE_OPS_ADDRESS") or f"unix://{ctx.config().jobmanager.socket}"
    SageOpsApp(address, token=ctx.token, ca=ctx.ca, insecure=ctx.insecure).run()

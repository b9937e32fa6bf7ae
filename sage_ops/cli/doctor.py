"""`sage-ops doctor`: check this machine's setup (sage_ops/checks) and print the report: a table
for people, the Check list for scripts; exit 1 if any check FAILs."""

from __future__ import annotations

import sys

from rich.table import Table
from rich.text import Text

from .. import render
from ..checks import Check, run_checks
from . import EXIT_FAILED, Ctx, cli, json_option, pass_ctx

STYLE: dict[str, str] = {"OK": "green", "WARN": "yellow", "FAIL": "bold red"}


def show(checks: list[Check]) -> None:
    """The table for people; markup-free Text so paths and messages print as they are."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("CHECK", "STATUS", "DETAIL"):
        table.add_column(col, no_wrap=col != "DETAIL", overflow="fold")
    for c in checks:
        detail = Text(c.detail)
        if c.fix:
            detail.append("\nfix: ", style="bold").append(c.fix)
        table.add_row(c.check, Text(c.status, style=STYLE[c.status]), detail)
    out = render.console()
    out.print(table)
    fails, warns = (sum(c.status == s for c in checks) for s in ("FAIL", "WARN"))
    if fails or warns:
        out.print(Text(f"{fails} failed, {warns} warning{'s' if warns != 1 else ''}",
                       style=STYLE["FAIL" if fails else "WARN"]))
    else:
        out.print(Text("all checks passed", style=STYLE["OK"]))


@cli.command()
@json_option
@pass_ctx
def doctor(ctx: Ctx, as_json: bool) -> None:
    """Check Python, Ray, that the TUI, charts, pipelines and SSH nodes import, the config, the
    daemon, a Ray head it left behind, the database, disk space and the SSH agent, and say how to
    fix what is wrong (exit 1 if any check FAILs)."""
    checks = run_checks(ctx)
    if as_json:
        render.print_json(checks)
    else:
        show(checks)
    if any(c.status == "FAIL" for c in checks):
        sys.exit(EXIT_FAILED)

"""`sage-ops gc`: retention now. Thin like the rest: the daemon decides what goes (and refuses a sweep
with no age given and no jobmanager.retention set); this parses, calls and prints."""

from __future__ import annotations

import click

from ..errors import Invalid
from ..formats import print_json
from ..plaintext import binary_size, stamp
from . import DURATION, Ctx, cli, json_option, pass_ctx


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only say what would go: how many jobs, their logs' size, when "
              "they ended.")
@click.option("--older-than", type=DURATION, metavar="AGE", help="Finished jobs that ended longer ago than this "
              "(30d, 12h, seconds) [default: the daemon's jobmanager.retention].")
@json_option
@pass_ctx
def gc(ctx: Ctx, dry_run: bool, older_than: float | None, as_json: bool) -> None:
    """Delete finished jobs that ended long ago, with their logs and results (admins).

    Unfinished jobs stay, and so does a finished job an unfinished one waits for; an array's tasks
    go with their array. Each batch deleted leaves an audit record (`sage-ops audit --action
    retention`). The daemon does the same in the background when jobmanager.retention is set."""
    try:
        report = ctx.client().gc(older_than, dry_run)
    except Invalid as exc:  # no age given and none configured: a usage error, as if click had made it
        raise click.UsageError(exc.message) from None
    if as_json:
        print_json(report)
        return
    verb = "would delete" if dry_run else "deleted"
    line = (f"{verb} {report.jobs} finished jobs ({report.rows} rows, {binary_size(report.log_bytes)} of logs) "
            f"that ended before {stamp(report.cutoff)}")
    if report.oldest_ended is not None:
        line += f", from {stamp(report.oldest_ended)} to {stamp(report.newest_ended)}"
    click.echo(line)
    if report.packages:
        click.echo(f"{verb} {report.packages} shipped working directories unused since then")
    if report.kept:
        click.echo(f"kept {report.kept} finished jobs old enough to go: unfinished jobs wait for them")

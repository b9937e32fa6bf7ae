"""`sage-ops pools`: the elastic pools (nodes.pools) as the daemon's autoscaler sees them, and
each pool's decisions with their reasons."""

from __future__ import annotations

import click

from .. import render
from . import Ctx, cli, pass_ctx
from .output import Output, list_command, output_option


@cli.group(invoke_without_command=True)
@output_option(formats=("table", "json", "yaml", "name"))
@click.pass_context
def pools(click_ctx: click.Context, out: Output) -> None:
    """Elastic pools: machines made nodes when jobs need them, let go when idle (nodes.pools).

    \b
      sage-ops pools                 # each: nodes up/joining/idle, min, max, wanted, jobs waiting, last decision
      sage-ops pools events gpu      # every decision with its reason, newest first

    Without a subcommand: the pool list (as `pools list`)."""
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(list_pools, output=out.format)


list_pools = list_command(pools, lambda ctx: ctx.client().list_pools(), render.pools,
                          "Each pool: its nodes up, joining, draining and idle, what it wants, what it last did.")


@pools.command("events")
@click.argument("name")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Events at most.")
@output_option(formats=("table", "json", "yaml"))
@pass_ctx
def pool_events(ctx: Ctx, name: str, limit: int, out: Output) -> None:
    """A pool's decisions, newest first: scale up for waiting jobs, drain after idle, refill after
    a loss, and why it did not act (at max, no free host, a host set aside). Admins."""
    events = ctx.client().pool_events(name, limit)
    out.emit(events, lambda: render.pool_events(events))

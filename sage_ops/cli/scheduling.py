"""Commands for work with structure: batches with dependencies, the graph, history, bulk cancel
and retry, priorities. Thin like the rest: parse, call the client, render."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import render
from ..errors import Invalid, Rejected
from ..lifecycle import JobStatus
from ..schemas import BulkResult
from . import EXIT_FAILED, Ctx, cli, filter_options, job_filter, json_option, pass_ctx
from .batchfile import load_batch, refused
from .completers import ACTIVE, RETRYABLE, job_ids
from .output import Output, output_option


def _bulk(ctx: Ctx, action: str, job_ids: tuple[str, ...], flt: dict[str, Any], as_json: bool) -> None:
    if job_ids and any(flt.values()):
        raise click.UsageError("give job ids or filter options, not both")
    if not job_ids and not any(flt.values()):
        raise click.UsageError("give job ids, or a filter such as --status/--name/--tenant")
    client = ctx.client()
    call = client.cancel_jobs if action == "cancel" else client.retry_jobs
    out: BulkResult = call(list(job_ids)) if job_ids else call(**{k: v for k, v in flt.items() if v})
    if as_json:
        render.print_json(out)
    else:
        render.bulk(out, "cancelled" if action == "cancel" else "retried")
    if out.errors:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("job_ids", nargs=-1, shell_complete=job_ids(ACTIVE))
@filter_options
@json_option
@pass_ctx
def cancel(ctx: Ctx, job_ids: tuple[str, ...], statuses: tuple[str, ...], name: str | None, tenant: str | None,
           since: Any, until: Any, as_json: bool) -> None:
    """Cancel jobs by id, or every active job matching a filter. A running job's whole process
    tree is killed; jobs waiting on a cancelled job are cancelled too.

    \b
      sage-ops cancel 3f2a9c01d2e4
      sage-ops cancel --status PENDING --name 'sweep-*'
    """
    _bulk(ctx, "cancel", job_ids, job_filter(statuses, name, tenant, since, until), as_json)


@cli.command()
@click.argument("job_ids", nargs=-1, shell_complete=job_ids(RETRYABLE))
@filter_options
@json_option
@pass_ctx
def retry(ctx: Ctx, job_ids: tuple[str, ...], statuses: tuple[str, ...], name: str | None, tenant: str | None,
          since: Any, until: Any, as_json: bool) -> None:
    """Run finished jobs again, as a new attempt (by id, or by filter: FAILED and CANCELLED
    jobs unless --status says otherwise)."""
    _bulk(ctx, "retry", job_ids, job_filter(statuses, name, tenant, since, until), as_json)


@cli.command("set-priority")
@click.argument("job_id", shell_complete=job_ids())
@click.argument("priority", type=int)
@json_option
@pass_ctx
def set_priority(ctx: Ctx, job_id: str, priority: int, as_json: bool) -> None:
    """Change a waiting job's priority (higher runs first)."""
    job = ctx.client().set_priority(job_id, priority)
    render.print_json(job) if as_json else click.echo(f"{job.id} {job.name} priority {job.priority}")


@cli.command()
@click.argument("job_id", shell_complete=job_ids())
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def graph(ctx: Ctx, job_id: str, out: Output) -> None:
    """The DAG a job belongs to, with live status and the critical path; for a pipeline job, its
    operators (fused into tasks) with records in/out, throughput and backpressure."""
    g = ctx.client().get_job_graph(job_id)
    out.emit(g, lambda: render.graph(g))


@cli.command()
@click.argument("job_id", shell_complete=job_ids())
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def history(ctx: Ctx, job_id: str, out: Output) -> None:
    """Every transition of a job (time, from, to, attempt, reason) and every attempt."""
    client = ctx.client()
    events = client.get_job_events(job_id)
    out.emit(events, lambda: render.history(client.get_job(job_id), events))


@cli.command("submit-batch")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="Print only the job ids, one per line.")
@json_option
@pass_ctx
def submit_batch(ctx: Ctx, file: Path, quiet: bool, as_json: bool) -> None:
    """Submit every job of a YAML file in one transaction: all are accepted, or none.

    \b
      jobs:
        - {name: prep, command: python prep.py}
        - {name: train, script: train.py, after: [prep], retry_policy: {max_retries: 2}}
        - {name: eval, command: [python, eval.py], after: [train], priority: 10}
    """
    try:
        refs = ctx.client().submit_batch(load_batch(file))
    except Invalid as exc:  # what the file says (a cycle, an unknown dependency): exit 2; Rejected: 1
        if isinstance(exc, Rejected):
            raise
        raise refused(file, exc.message) from None
    if as_json:
        render.print_json(refs)
        return
    for ref in refs:
        click.echo(ref.id if quiet else f"{ref.id} {ref.name} {ref.status.value}")
    if not quiet:
        click.echo(f"submitted {len(refs)} job(s)", err=True)
    if any(r.status is JobStatus.REJECTED for r in refs):
        sys.exit(EXIT_FAILED)

"""Commands for work with structure: batches with dependencies, the graph, history, bulk cancel,
retry, hold and release, priorities. Thin like the rest: parse, call the client, render."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import render
from ..errors import Invalid, Rejected, SageOpsError
from ..lifecycle import JobStatus
from ..views import BulkResult
from . import DURATION, EXIT_FAILED, Ctx, cli, filter_options, job_filter, json_option, pass_ctx
from .batchfile import load_batch, refused
from .completers import ACTIVE, RETRYABLE, WAITING, job_ids
from .job_spec import job_list, memory_bytes, moment
from .output import Output, output_option

#: a bulk action on a terminal asks first when it would touch more jobs than this (--yes skips)
CONFIRM_OVER = 5


def bulk_options(f: Any) -> Any:
    """--dry-run and --yes: every bulk action shows what it would touch, and asks on a terminal."""
    f = click.option("-y", "--yes", is_flag=True, help=f"Do not ask before touching more than {CONFIRM_OVER} jobs "
                     "(only a terminal is asked; piped or scripted use never is).")(f)
    return click.option("--dry-run", is_flag=True, help="List the jobs it would touch; touch nothing.")(f)


DONE = {"cancel": "cancelled", "retry": "retried", "hold": "held", "release": "released"}


def _bulk(ctx: Ctx, action: str, job_ids: tuple[str, ...], flt: dict[str, Any], as_json: bool,
          dry_run: bool = False, yes: bool = False, **options: Any) -> None:
    """Cancel, retry, hold or release by ids or filter. The daemon decides what is touched; on a terminal, more
    than CONFIRM_OVER jobs are listed and asked about first, and then exactly those are touched.
    Without a terminal nothing is asked (as kubectl and rm): a pipe or a script must not hang."""
    if job_ids and any(flt.values()):
        raise click.UsageError("give job ids or filter options, not both")
    if not job_ids and not any(flt.values()):
        raise click.UsageError("give job ids, or a filter such as --status/--name/--tenant")
    call = getattr(ctx.client(), f"{action}_jobs")
    given = {k: v for k, v in flt.items() if v}
    ids: list[str] = list(job_ids)
    done = DONE[action]
    out: BulkResult | None = None
    if dry_run or (not yes and sys.stdin.isatty() and not 0 < len(ids) <= CONFIRM_OVER):
        plan: BulkResult = call(ids or None, dry_run=True, **options, **({} if ids else given))
        if dry_run or len(plan.affected) > CONFIRM_OVER:
            _report(plan, f"would {action}" if dry_run else "", as_json and dry_run)
        if dry_run:
            sys.exit(EXIT_FAILED if plan.errors else 0)
        if len(plan.affected) > CONFIRM_OVER and not click.confirm(
                f"{action} these {len(plan.affected)} jobs?", err=True):
            raise SageOpsError(f"not confirmed: no job was {done}")
        if not ids:  # exactly the jobs listed (asked about), not what the filter matches by now
            ids = [r.id for r in plan.affected]
            out = None if ids else plan
    if out is None:
        out = call(ids, **options) if ids else call(**options, **given)
    _report(out, done, as_json)
    if out.errors:
        sys.exit(EXIT_FAILED)


def _report(out: BulkResult, verb: str, as_json: bool) -> None:
    """The jobs touched (or that would be), then a note per job that had already ended (not an
    error: a cancel is idempotent, as scripts want), then the errors. An empty verb: the list only."""
    if as_json:
        render.print_json(out)
        return
    if not verb:
        for ref in out.affected:
            click.echo(f"  {ref.id} {ref.name} {ref.status.value}", err=True)
        return
    if out.affected or out.errors or not out.unchanged:
        render.bulk(out, verb)
    for ref in out.unchanged:
        click.echo(f"note: job {ref.id} ({ref.name}) is already {ref.status.value}: nothing to cancel", err=True)


def bulk_command(action: str, completes: tuple[str, ...], doc: str, *flags: Any) -> None:
    """`sage-ops ACTION [JOB_IDS...] [filters] [--dry-run] [--yes]`: one shape for every bulk
    action; `flags`, click options of its own, go to the client's call as they are named."""

    def command(ctx: Ctx, job_ids: tuple[str, ...], statuses: tuple[str, ...], name: str | None, tenant: str | None,
                since: Any, until: Any, array: str | None, dry_run: bool, yes: bool, as_json: bool,
                **options: Any) -> None:
        _bulk(ctx, action, job_ids, job_filter(statuses, name, tenant, since, until, array), as_json, dry_run, yes,
              **{k: v for k, v in options.items() if v})

    for flag in flags:
        command = flag(command)
    cli.command(action, help=doc)(click.argument("job_ids", nargs=-1, shell_complete=job_ids(completes))(
        filter_options(bulk_options(json_option(pass_ctx(command))))))


bulk_command("cancel", ACTIVE, """Cancel jobs by id, or every active job matching a filter. A running job's whole
    process tree is killed; jobs waiting on a cancelled job are cancelled too.

    \b
      sage-ops cancel 3f2a9c01d2e4
      sage-ops cancel --status PENDING --name 'sweep-*'
    """)
bulk_command("retry", RETRYABLE, """Run finished jobs again, as a new attempt (by id, or by filter: FAILED and
    CANCELLED jobs unless --status says otherwise).

    \b
      sage-ops retry $B --with-dependents   # B again, and the jobs its failure cancelled
      sage-ops retry $SWEEP --failed        # an array's failed and cancelled tasks only
    """, click.option("--with-dependents", is_flag=True, help="Also the jobs their failure cancelled (and theirs, "
                                                              "down the graph): they wait for them again."),
    click.option("--failed", is_flag=True, help="An array: only its tasks that did not complete (without it, every "
                 "task runs again)."))
bulk_command("hold", WAITING, """Keep waiting jobs from starting until released (by id, or every waiting job matching a
    filter). A held job stays PENDING, its reason `held by user`; `submit --hold` submits one held.

    \b
      sage-ops hold --name 'sweep-*'      # the cluster is needed for something else
      sage-ops release --name 'sweep-*'   # they take their places in the queue again
    """)
bulk_command("release", WAITING, """Let held jobs start again, in their places in the queue (by id or filter).""")


@cli.command()
@click.argument("job_id", shell_complete=job_ids(WAITING))
@click.option("--priority", type=int, help="Higher runs first.")
@click.option("--timeout", type=DURATION, help="Kill an attempt after this long: seconds, or 90s, 15m, 1h.")
@click.option("--begin", metavar="WHEN", help="Do not start before WHEN (as submit --begin; `now` lifts it).")
@click.option("--cpu", type=float, help="CPUs per attempt.")
@click.option("--memory", help="Memory per attempt: 512MiB, 8GB (a bare number is MiB).")
@click.option("--gpu", type=float, help="GPUs per attempt.")
@click.option("--after", "--after-ok", "after", multiple=True, metavar="JOB",
              help="Wait for these jobs to complete instead (repeatable or comma-separated; '' for none).")
@click.option("--after-notok", multiple=True, metavar="JOB", help="Wait for these to end without completing instead.")
@click.option("--after-any", multiple=True, metavar="JOB", help="Wait for these to end, however, instead.")
@click.option("--throttle", type=click.IntRange(1, 1_000_000), metavar="N",
              help="An array: at most N tasks at once from now on (also while it runs).")
@json_option
@pass_ctx
def update(ctx: Ctx, job_id: str, priority: int | None, timeout: float | None, begin: str | None,
           cpu: float | None, memory: str | None, gpu: float | None, after: tuple[str, ...],
           after_notok: tuple[str, ...], after_any: tuple[str, ...], throttle: int | None, as_json: bool) -> None:
    """Change a waiting job (Slurm's scontrol update): its priority, timeout, begin time,
    resources or dependencies. A dependency list given replaces that list; a cycle, an unknown job
    or a dependency that can no longer be met is refused. Audited in its history.

    \b
      sage-ops update $C --after $B2 --priority 5 --cpu 2 --timeout 1h
      sage-ops update $SWEEP --throttle 50   # an array, also while it runs
    """
    resources = {k: v for k, v in (("cpu", cpu), ("memory", memory_bytes(memory)),
                                   ("gpu", gpu)) if v is not None}
    changes: dict[str, Any] = {"priority": priority, "timeout": timeout, "begin_at": moment(begin),
                               "resources": resources or None, "throttle": throttle}
    for key, given in (("dependencies", after), ("after_notok", after_notok), ("after_any", after_any)):
        if given:
            changes[key] = job_list(given)
    job = ctx.client().update_job(job_id, **{k: v for k, v in changes.items() if v is not None})
    render.print_json(job) if as_json else click.echo(f"{job.id} {job.name} {job.status.value}: {job.reason}")


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

"""Commands for work with structure: batches with dependencies, the graph, history, bulk cancel
and retry, priorities. Thin like the rest: parse, call the client, render."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from .. import paths, render
from ..client import script_spec
from ..lifecycle import JobStatus
from ..schemas import BulkResult, JobSpec
from . import EXIT_FAILED, Ctx, cli, filter_options, job_filter, json_option, pass_ctx
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


def _word(x: Any) -> Any:
    if isinstance(x, bool):
        return "true" if x else "false"
    return str(x) if isinstance(x, (int, float)) else x


def load_batch(path: Path) -> list[JobSpec]:
    """A YAML (or JSON) file: `jobs:` (a list) and optional `defaults:` merged into each job.
    `after:` is an alias of `dependencies:` (names of jobs in the file, or job ids); `script:` is
    a file path relative to the file (its content is shipped); `command:` a list or a string."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="FILE") from None
    if isinstance(doc, list):
        doc = {"jobs": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list) or not doc["jobs"]:
        raise click.BadParameter(f"{path}: expected a non-empty `jobs:` list", param_hint="FILE")
    defaults = doc.get("defaults") or {}
    specs = []
    for i, raw in enumerate(doc["jobs"]):
        if not isinstance(raw, dict):
            raise click.BadParameter(f"{path}: jobs[{i}] is not a mapping", param_hint="FILE")
        item = {**defaults, **raw}
        if "after" in item:
            after = item.pop("after")
            item["dependencies"] = [after] if isinstance(after, str) else after
        if isinstance(item.get("command"), str):
            item["command"] = shlex.split(item["command"])
        for key in ("command", "args"):  # YAML reads `[true, 3]` as a bool and an int: argv is text
            if isinstance(item.get(key), list):
                item[key] = [_word(x) for x in item[key]]
        item.setdefault("working_dir", paths.working_dir())
        try:
            if isinstance(item.get("script"), str):
                script = (path.parent / item.pop("script")).resolve()
                specs.append(script_spec(script, item.pop("args", []), **item))
            else:
                specs.append(JobSpec.model_validate(item))
        except (ValidationError, OSError, TypeError) as exc:
            msg = exc.errors()[0] if isinstance(exc, ValidationError) else None
            detail = (f"{'.'.join(str(p) for p in msg['loc'])}: {msg['msg']}" if msg else str(exc))
            raise click.BadParameter(f"{path}: jobs[{i}]: {detail.removeprefix('Value error, ')}",
                                     param_hint="FILE") from None
    return specs


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
    refs = ctx.client().submit_batch(load_batch(file))
    if as_json:
        render.print_json(refs)
        return
    for ref in refs:
        click.echo(ref.id if quiet else f"{ref.id} {ref.name} {ref.status.value}")
    if not quiet:
        click.echo(f"submitted {len(refs)} job(s)", err=True)
    if any(r.status is JobStatus.REJECTED for r in refs):
        sys.exit(EXIT_FAILED)

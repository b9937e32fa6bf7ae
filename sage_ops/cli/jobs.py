"""The everyday commands: submit, jobs, status, logs, result, wait (and health, stats).

They run dozens of times a day from shells and scripts, so they cost no more than a process
start: the daemon's JSON through wire.py, printed by plaintext.py or as it came. The daemon
validates every spec (its refusal of a bad option is a usage error here, exit 2); only the
tables of health and stats use rich, imported when asked for."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from .. import plaintext
from ..errors import Invalid, SageOpsError
from ..wire import WireClient, job_path
from . import (
    DELAY,
    DURATION,
    EXIT_FAILED,
    Ctx,
    cli,
    filter_options,
    job_filter,
    json_option,
    pass_ctx,
    shipping,
)
from .completers import ACTIVE, file_names, job_ids, tenant_names
from .job_spec import build_spec, job_list, secret_values
from .output import Output, output_option

SUBMIT_OPTION_NAMES = {"--cpu", "--memory", "--gpu", "--resource", "--name", "--env", "--secret-env",
                      "--secret-env-file", "--tenant", "--priority", "--timeout", "--after", "--after-ok",
                      "--after-notok", "--after-any", "--after-corr", "--finally-of", "--array",
                      "--kill-on-invalid-dep", "--begin", "--hold", "--preemptible", "--signal", "--retries",
                      "--retry-delay", "--retry-backoff"} | shipping.NAMES
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "REJECTED")


def wait_for(w: WireClient, job_id: str, timeout: float | None = None) -> dict[str, Any]:
    """The job once it ended (or when `timeout` seconds have passed), by 30 s long polls."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
        job = w.call("GET", job_path(job_id, "/wait"), {"timeout": left}, timeout=left + w.config.timeout)
        if job["status"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
            return job


def log_entries(w: WireClient, job_id: str, follow: bool, tail: int | None = None,
                attempt: int | None = None) -> Any:
    """A job's log entries as they come (dicts: timestamp, stream, message, attempt); of one
    attempt only, if given (the daemon filters, and so does this, for a daemon that does not)."""
    for line in w.stream(job_path(job_id, "/logs"), {"follow": follow, "tail": tail, "attempt": attempt}):
        entry = json.loads(line)
        if attempt is None or entry.get("attempt") == attempt:
            yield entry


class AttemptMarks:
    """The line `sage-ops logs` prints where the lines of another attempt begin (a log holds all
    of a job's attempts, in order). The job's retry policy is read when the first mark is due."""

    def __init__(self, w: WireClient, job_id: str) -> None:
        self.w, self.job_id = w, job_id
        self.last = 1  # the first attempt needs no mark, a later one does
        self.retries: int | None = None

    def before(self, entry: dict[str, Any]) -> str | None:
        number = entry.get("attempt") or 0
        if number < 1 or number == self.last:  # 0: the daemon's own note, of no attempt
            return None
        self.last = number
        if self.retries is None:
            job = self.w.call("GET", job_path(self.job_id))
            self.retries = int(((job.get("spec") or {}).get("retry_policy") or {}).get("max_retries") or 0)
        retry = f" (retry {number - 1} of {self.retries})" if 0 < number - 1 <= self.retries else ""
        return f"── attempt {number}{retry} ──"


@cli.command()
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="SCRIPT|-- COMMAND [ARGS]...",
                shell_complete=file_names)
@click.option("--name", help="Job name (default: script or command).")
@click.option("--cpu", type=float, help="CPUs  [default: 1]")
@click.option("--memory", metavar="SIZE", help="Memory: MiB when bare (512, as Slurm's --mem), or 512MiB, 8GB, 1G.")
@click.option("--gpu", type=float, help="GPUs.")
@click.option("--resource", multiple=True, metavar="NAME=N", help="Custom Ray resource (repeatable).")
@click.option("--env", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
@click.option("--secret-env", multiple=True, metavar="NAME", help="Secret environment variable, its value taken "
              "from this environment (NAME=VALUE works but is visible in /proc and warns): sealed at rest, shown "
              "as ***, masked in the logs (repeatable).")
@click.option("--secret-env-file", multiple=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="Secret environment variables from FILE: NAME=VALUE lines, # comments (repeatable).")
@click.option("--tenant", help="Submit for this tenant (admins; members submit to their own).",
              shell_complete=tenant_names)
@shipping.environment_options
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--timeout", type=DURATION, help="Kill an attempt after this long: seconds, or 90s, 15m, 1h, 2d "
              "(FAILED, reason timeout)  [default: the daemon's job_timeout]")
@click.option("--after", "--after-ok", "after", multiple=True, metavar="JOB", help="Start only after JOB "
              "completed (repeatable or comma-separated); if JOB fails or is cancelled, this job is cancelled "
              "(Slurm's afterok).")
@click.option("--after-notok", multiple=True, metavar="JOB", help="Start only after JOB ended without completing: "
              "failed, cancelled or rejected (a cleanup or alert step); if JOB completes, this job is cancelled.")
@click.option("--after-any", "--finally-of", "after_any", multiple=True, metavar="JOB",
              help="Start after JOB ended, however it ended (a report, a teardown); of an array, once every task "
              "has (--finally-of reads better there).")
@click.option("--after-corr", multiple=True, metavar="ARRAY", help="With --array: task N starts after task N of "
              "ARRAY completed, index by index (Slurm's aftercorr).")
@click.option("--array", "array", metavar="INDICES[%N]", help="Run as an array of tasks: 0-999, 0-999:2, 1,3,5-7; "
              "%N runs at most N at once. Each task has its index in $SAGE_OPS_ARRAY_INDEX and for {index} in "
              "its arguments; the array is one job to list, wait for, cancel, hold or retry.")
@click.option("--kill-on-invalid-dep", type=click.Choice(["yes", "no"]), default="yes", show_default=True,
              help="When a dependency can never be satisfied (an --after job failed): cancel this job (yes), or "
              "keep it PENDING as DependencyNeverSatisfied until you update its dependencies, retry that job, or "
              "cancel it (no).")
@click.option("--hold", is_flag=True, help="Submit it held: it waits PENDING until `sage-ops release`.")
@click.option("--preemptible", is_flag=True, help="A waiting job of higher priority may stop it to start: it gets "
              "its --signal, then is requeued (not a failed attempt; $SAGE_OPS_RESTART_COUNT counts its restarts).")
@click.option("--signal", "warn_signal", metavar="SIG[@SECONDS]", help="Warn it with SIG (USR1, TERM, ...) SECONDS "
              "(default 60) before its time limit, and on preemption SECONDS before it is stopped (Slurm's --signal).")
@click.option("--begin", metavar="WHEN", help="Do not start before WHEN: now+1h, 14:30 (its next occurrence), "
              "tomorrow 02:00, midnight, 2026-12-06T02:00 (local time). It waits PENDING, its reason `begins at`.")
@click.option("--retries", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="Retry a failed attempt this many times.")
@click.option("--retry-delay", type=DELAY, default=0, show_default=True,
              help="Wait before the first retry: seconds, or 90s, 15m, 1h.")
@click.option("--retry-backoff", type=click.FloatRange(1, 100), default=1, show_default=True, metavar="BASE",
              help="Multiply the delay by BASE after each failed attempt (capped at 1h).")
@click.option("--command", "force_command", is_flag=True, help="Treat the first word as a command even if it "
              "is a local file (do not ship it).")
@click.option("--wait", is_flag=True, help="Follow the logs and wait; exit with the job's own exit code (143 if "
              "cancelled, 125 if it ended without one). Ctrl-C stops the waiting, not the job.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the job id.")
@json_option
@pass_ctx
def submit(ctx: Ctx, argv: tuple[str, ...], name: str | None, cpu: float | None, memory: str | None,
           gpu: float | None, resource: tuple[str, ...], env: tuple[str, ...], secret_env: tuple[str, ...],
           secret_env_file: tuple[str, ...], tenant: str | None, workdir: str | None, chdir: str | None,
           pip: tuple[str, ...], requirements: str | None, venv: str | None, image: str | None, priority: int,
           timeout: float | None, after: tuple[str, ...], after_notok: tuple[str, ...], after_any: tuple[str, ...],
           after_corr: tuple[str, ...], array: str | None, kill_on_invalid_dep: str, hold: bool, preemptible: bool,
           warn_signal: str | None, begin: str | None,
           retries: int, retry_delay: float, retry_backoff: float, force_command: bool,
           wait: bool, quiet: bool, as_json: bool) -> None:
    """Submit a script (its content is shipped) or a command.

    \b
      sage-ops submit analysis.py --cpu 2 -- --input data.csv
      sage-ops submit --memory 512MiB --wait -- python -c 'print("hi")'
      sage-ops submit --after $A --retries 3 --retry-delay 60 --retry-backoff 2 train.py
      sage-ops submit --after-notok $A -- notify.sh "training failed"
      sage-ops submit --begin 'tomorrow 02:00' nightly.sh
      sage-ops submit --array 0-999%20 --name sweep train.py -- --seed '{index}'
      sage-ops submit --finally-of $SWEEP report.py
      sage-ops submit --workdir . --pip 'numpy<3' -- python train.py
    Options go before `--`; everything after it is the job's own argv.
    """
    stray = [a for a in argv[1:] if a.split("=", 1)[0] in SUBMIT_OPTION_NAMES]
    if stray:
        click.echo(f"note: {', '.join(stray)} after the script/command is passed to the job; put sage-ops "
                   "options before it (or before --)", err=True)
    spec = build_spec(argv, command=force_command, name=name, cpu=cpu, memory=memory, gpu=gpu, resource=resource,
                      env=env, secret_env=secret_values(secret_env, secret_env_file), tenant=tenant,
                      workdir=chdir, shipped=workdir, priority=priority, timeout=timeout,
                      dependencies=job_list(after), after_notok=job_list(after_notok), after_any=job_list(after_any),
                      begin=begin, hold=hold, kill_on_invalid_dep=kill_on_invalid_dep == "yes", array=array,
                      after_corr=job_list(after_corr), preemptible=preemptible, warn_signal=warn_signal,
                      retry_policy={"max_retries": retries, "retry_delay": retry_delay,
                                    "retry_exponential_base": retry_backoff})
    spec.update(shipping.fields(workdir, pip, requirements, venv, image))
    w = ctx.wire()
    [spec] = shipping.send_packages(w.call, [spec], quiet=quiet or as_json)
    try:  # a fresh Idempotency-Key: safe to send again after a timeout or a failover
        job = w.call("POST", "/v1/jobs", json_body=spec, headers={"Idempotency-Key": os.urandom(16).hex()})
    except Invalid as exc:  # the daemon's check of an option: a usage error, as if click had made it
        raise click.UsageError(exc.message) from None
    if as_json:
        click.echo(json.dumps(job, indent=2, ensure_ascii=False))
    elif quiet:
        click.echo(job["id"])
    elif job["status"] != "REJECTED":
        click.echo(f"submitted job {job['id']} ({job['name']}) {job['status']}", err=wait)
    if job["status"] == "REJECTED":
        raise SageOpsError(f"job {job['id']} rejected: {job['reason']}")
    if wait:  # as srun and `docker run`: the job's own exit code (README "Exit status")
        from .progress import exit_status, keeps_running

        with keeps_running(ctx, lambda: [job["id"]]):
            if not (quiet or as_json):
                for entry in log_entries(w, job["id"], follow=True):
                    click.echo(plaintext.log_line(entry, timestamps=False))
            final = wait_for(w, job["id"])
        click.echo(f"job {final['id']} {final['status']}" + (f": {final['reason']}" if final["reason"] else ""),
                   err=True)
        sys.exit(exit_status(final))


@cli.command()
@filter_options
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000), help="Jobs per page.")
@click.option("--cursor", help="Start after this page cursor (printed at the end of a full page).")
@click.option("--sort", "sort", metavar="COLUMN", help="Order every matching job by id, name, status, priority, "
              "tenant, node, attempts, exit_code, reason, created, started or ended [default: newest first].")
@click.option("--desc", is_flag=True, help="With --sort: largest first.")
@click.option("--arrays", "only_arrays", is_flag=True, help="Only array jobs, each with a progress bar.")
@output_option()
@pass_ctx
def jobs(ctx: Ctx, statuses: tuple[str, ...], name: str | None, tenant: str | None, since: Any, until: Any,
         array: str | None, limit: int, cursor: str | None, sort: str | None, desc: bool, only_arrays: bool,
         out: Output) -> None:
    """List jobs, newest first, one page at a time.

    \b
      sage-ops jobs --status RUNNING -o wide
      sage-ops jobs -o json | jq -r '.[].id'
      sage-ops jobs -q --status FAILED --since 1h | xargs sage-ops retry
      sage-ops jobs --sort priority --desc
      sage-ops jobs --arrays                       # sweep [====>   ] 412/1000 done, 20 running, 3 failed
      sage-ops jobs --array $SWEEP --status FAILED # an array's tasks
    """
    if desc and not sort:
        raise click.UsageError("--desc orders a --sort column; without --sort the newest come first")
    params = {**job_filter(statuses, name, tenant, since, until, array), "limit": limit, "cursor": cursor,
              "sort": sort, "desc": desc, "arrays": only_arrays}
    params = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in params.items() if v}
    page = ctx.wire().call("GET", "/v1/jobs", params)
    # a plain list, as scripts expect; the cursor goes to stderr
    table = plaintext.arrays_table if only_arrays else plaintext.jobs_table
    out.emit(page["jobs"], lambda: table(page["jobs"], wide=out.wide), flat=job_csv, header=JOB_CSV)
    if page.get("next_cursor"):
        again = f" --sort {sort}{' --desc' if desc else ''}" if sort else ""
        click.echo(f"more: sage-ops jobs{again} --cursor {page['next_cursor']} ...", err=True)


JOB_CSV = ("id", "name", "status", "reason", "priority", "tenant", "kind", "exit_code", "attempts_made", "node",
           "created_at", "started_at", "ended_at", "cpu_seconds", "max_rss_bytes")  # also an empty list's header


def job_csv(job: dict[str, Any]) -> dict[str, Any]:
    """A job as one CSV row: its own fields, then the CPU seconds of all its attempts and the
    largest peak memory among them (as sacct's TotalCPU and MaxRSS); its attempts in `status`."""
    tried = job.get("attempts") or []
    cpu = [a["cpu_seconds"] for a in tried if a.get("cpu_seconds") is not None]
    rss = [a["max_rss_bytes"] for a in tried if a.get("max_rss_bytes") is not None]
    row = {k: job.get(k) for k in JOB_CSV}
    row.update(cpu_seconds=round(sum(cpu), 6) if cpu else None, max_rss_bytes=max(rss, default=None))
    return row


@cli.command()
@click.argument("job_id", shell_complete=job_ids())
@output_option()
@pass_ctx
def status(ctx: Ctx, job_id: str, out: Output) -> None:
    """A job's full record, with its attempts."""
    job = ctx.wire().call("GET", job_path(job_id))
    out.emit(job, lambda: _detail(job), flat=job_csv)


def _detail(job: dict[str, Any]) -> None:
    plaintext.job_detail(job)
    if job.get("pipeline"):  # a pipeline's operators: rich's table (rare, and worth its import)
        from .. import render
        from ..pipeline.shapes import PipelineView

        render.console().print()
        render.pipeline(PipelineView.model_validate(job["pipeline"]))


@cli.command()
@click.argument("job_id", shell_complete=job_ids(("RUNNING",)))
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--tail", type=click.IntRange(0), help="Only the last N lines.")
@click.option("--timestamps/--no-timestamps", default=True, show_default=True)
@click.option("--attempt", type=click.IntRange(1), metavar="N", help="Only the lines of attempt N (see `status`); "
              "--tail counts among them.")
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def logs(ctx: Ctx, job_id: str, follow: bool, tail: int | None, timestamps: bool, attempt: int | None,
         out: Output) -> None:
    """A job's stdout/stderr lines (kept by the daemon), with a marker line where a later
    attempt's lines begin; -o json prints one JSON object per line, with its `attempt`."""
    from .progress import keeps_running

    with keeps_running(ctx, lambda: [job_id] if follow else []):  # Ctrl-C on -f: the job runs on
        w = ctx.wire()
        marks = AttemptMarks(w, job_id)
        for entry in log_entries(w, job_id, follow, tail, attempt):
            if out.machine:
                out.line(entry)
                continue
            mark = None if attempt else marks.before(entry)
            if mark:
                click.echo(mark)
            click.echo(plaintext.log_line(entry, timestamps))


@cli.command()
@click.argument("job_id", shell_complete=job_ids())
@output_option(quiet=False, formats=("json", "yaml"))
@pass_ctx
def result(ctx: Ctx, job_id: str, out: Output) -> None:
    """The JSON the job set with sage_ops.job.set_result()."""
    w = ctx.wire()
    value = w.call("GET", job_path(job_id, "/result")).get("result")
    if value is None:
        job = w.call("GET", job_path(job_id))
        raise SageOpsError(f"job {job_id} has no result ({job['status']})")
    out.emit(value)


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, shell_complete=job_ids(ACTIVE))
@click.option("--timeout", type=DURATION, help="Give up after this long (seconds, or 90s, 15m, 1h): exit 124, "
              "the jobs run on.")
@output_option(quiet=False)
@pass_ctx
def wait(ctx: Ctx, job_ids: tuple[str, ...], timeout: float | None, out: Output) -> None:
    """Wait for jobs to end. Exit 0 if all COMPLETED; else the status of the first job, in the
    order given, that did not: its own exit code, 143 if cancelled, 125 if it ended without a
    code, 124 if --timeout passed first (it runs on). Ctrl-C stops the waiting, not the jobs."""
    w = ctx.wire()
    deadline = None if timeout is None else time.monotonic() + timeout
    views: list[dict[str, Any]] = []
    from .progress import Progress, first_failure, keeps_running

    with keeps_running(ctx, lambda: list(job_ids[len(views):])), \
            Progress(len(job_ids), tty=None if len(job_ids) > 1 else False) as bar:
        for job_id in job_ids:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            views.append(wait_for(w, job_id, left))
            if len(job_ids) > 1:
                v = views[-1]
                bar.update("jobs", f"{v['id']} {v['status']}", len(views),
                           line=f"wait: {len(views)}/{len(job_ids)} ended ({v['id']} {v['status']})")
    out.emit(views, lambda: [click.echo(f"{v['id']} {v['status']}" + (f" ({v['reason']})" if v["reason"] else ""))
                             for v in views], flat=job_csv)
    late = [f"{v['id']} {v['status']}" for v in views if v["status"] not in TERMINAL]
    if late:
        click.echo(f"error: timed out after {timeout:g}s; still running: {', '.join(late)} (the wait ended, not the "
                   "job: wait again, or cancel it)", err=True)
    sys.exit(first_failure(views))


@cli.command()
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def health(ctx: Ctx, out: Output) -> None:
    """Daemon, database and Ray health (exit 1 if degraded, 3 if unreachable)."""
    from .. import render

    h = ctx.client().health_check()
    out.emit(h, lambda: render.health(h))
    if h.status != "ok":
        sys.exit(EXIT_FAILED)


@cli.command()
@click.option("--chart", is_flag=True, help="Charts of the series: jobs finished/min, queue depth, CPU and memory "
              "use (plain numbers when not on a terminal).")
@click.option("--window", type=DURATION, metavar="AGE", help="How far back the series goes: 90s, 15m, 1h, 2d, 1w "
              "[default: 1h].")
@click.option("--width", type=click.IntRange(40, 1000), help="Chart width (default: the terminal's).")
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def stats(ctx: Ctx, chart: bool, window: float | None, width: int | None, out: Output) -> None:
    """Job counts by status; with --chart or --window, the sampled series (throughput, queue,
    utilization) over the window."""
    from .. import charts, render
    if not chart and window is None:
        s = ctx.client().get_statistics()
        out.emit(s, lambda: render.stats(s))
        return
    series = ctx.client().metrics_series(window or 3600.0)
    if out.machine:
        out.emit(series)
    elif sys.stdout.isatty() or width:
        size = os.get_terminal_size() if sys.stdout.isatty() else os.terminal_size((100, 40))
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        click.echo(charts.charts(series, width or size.columns, None, color))
    else:
        click.echo(charts.numbers(series))

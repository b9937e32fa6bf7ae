"""`sage-ops`: thin click commands (parse -> client -> render). Rules live in the daemon."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from .. import __version__, paths, render
from ..client import JobManagerClient, script_spec
from ..config import Config, load_config
from ..errors import DaemonUnavailable, SageOpsError
from ..lifecycle import JobStatus
from ..schemas import JobSpec, JobView, Resources, parse_window
from .completers import ACTIVE, job_ids, tenant_names
from .output import Output, output_option

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3  # documented in the README and man sage-ops
SUBMIT_OPTION_NAMES = {"--cpu", "--memory", "--gpu", "--resource", "--name", "--env", "--secret-env", "--tenant",
                      "--priority", "--timeout", "--after", "--retries", "--retry-delay", "--retry-backoff"}


class Ctx:
    def __init__(self, address: str | None, config_path: str | None, token: str | None = None,
                 ca: str | None = None) -> None:
        self.address = address
        self.config_path = config_path
        self.token, self.ca = token, ca
        self._client: JobManagerClient | None = None

    def config(self, **overrides: Any) -> Config:
        return load_config(self.config_path, **overrides)

    def target(self, cfg: Config | None = None) -> tuple[str, str]:
        """The daemon's address and what named it: --address, $SAGE_OPS_ADDRESS, else the config's
        socket (`cfg`, or the config as loaded now)."""
        if self.address:
            return self.address, "--address"
        if os.environ.get("SAGE_OPS_ADDRESS"):
            return os.environ["SAGE_OPS_ADDRESS"], "$SAGE_OPS_ADDRESS"
        return f"unix://{(cfg or self.config()).jobmanager.socket}", "jobmanager.socket"

    def client(self, timeout: float | None = None) -> JobManagerClient:
        if self._client is None:
            address = self.target()[0]
            # one address: fail fast; several: ride out a failover between them
            extra = {} if timeout is None else {"timeout": timeout}
            self._client = JobManagerClient(address, config={"retry_attempts": 1 if "," not in address else 3,
                                                             "ca": self.ca, **extra}, token=self.token)
        return self._client


pass_ctx = click.make_pass_decorator(Ctx)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")


def _versions(ctx: click.Context, value: bool) -> None:
    """sage-ops, Ray (read from its metadata: importing Ray takes seconds) and Python."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        ray = version("ray")
    except PackageNotFoundError:
        ray = "not installed"
    click.echo(f"sage-ops {__version__}\nray {ray}\npython {sys.version.split()[0]} ({sys.executable})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--address", metavar="ADDR", help="unix:///path.sock, HOST:PORT or tcp://HOST:PORT; comma-separated "
              "for failover. Default: $SAGE_OPS_ADDRESS, then the config's socket.")
@click.option("--config", "config_path", metavar="FILE", envvar="SAGE_OPS_CONFIG", help="YAML config file.")
@click.option("--token", metavar="TOKEN", help="Bearer token (default: $SAGE_OPS_TOKEN; for TCP, the local "
              "admin's token file). On the Unix socket your uid speaks for you unless a token is given.")
@click.option("--ca", metavar="PEM", help="CA that signed the daemon's TLS certificate (default: $SAGE_OPS_CA); "
              "TCP then uses TLS.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=lambda c, _p, v: _versions(c, v),
              help="Print the versions of sage-ops, Ray and Python, and exit.")
@click.pass_context
def cli(ctx: click.Context, address: str | None, config_path: str | None, token: str | None, ca: str | None) -> None:
    """sage-ops: a terminal-first job manager for Ray clusters."""
    ctx.obj = Ctx(address, config_path, token, ca)


# -- jobs --------------------------------------------------------------------------------------
def _kv(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=what)
        out[key] = value
    return out


def build_spec(argv: Sequence[str], *, command: bool, name: str | None, cpu: float | None, memory: str | None,
               gpu: float | None, resource: Sequence[str], env: Sequence[str], workdir: str | None,
               priority: int, timeout: float | None, dependencies: Sequence[str] = (),
               retry_policy: dict[str, Any] | None = None, secret_env: Sequence[str] = (),
               tenant: str | None = None) -> JobSpec:
    if not argv:
        raise click.UsageError("nothing to run: give a script file or a command (after --)")
    custom = {k: _float(v, "--resource") for k, v in _kv(resource, "--resource").items()}
    try:
        res = Resources(cpu=1.0 if cpu is None else cpu, gpu=gpu or 0.0, memory=memory, custom_resources=custom)
        common: dict[str, Any] = {"name": name, "resources": res, "env": _kv(env, "--env"), "priority": priority,
                                  "timeout": timeout, "working_dir": paths.working_dir(workdir),
                                  "dependencies": list(dependencies), "retry_policy": retry_policy or {},
                                  "secret_env": _kv(secret_env, "--secret-env"), "tenant": tenant}
        if not command and Path(argv[0]).is_file():
            return script_spec(argv[0], list(argv[1:]), **common)
        return JobSpec(kind="command", command=list(argv), **{k: v for k, v in common.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise click.UsageError(f"{where}: {str(err['msg']).removeprefix('Value error, ')}") from None


def _float(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number", param_hint=what) from None


@cli.command()
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="SCRIPT|-- COMMAND [ARGS]...")
@click.option("--name", help="Job name (default: script or command).")
@click.option("--cpu", type=float, help="CPUs  [default: 1]")
@click.option("--memory", metavar="SIZE", help="Memory, e.g. 512MiB or 8GB.")
@click.option("--gpu", type=float, help="GPUs.")
@click.option("--resource", multiple=True, metavar="NAME=N", help="Custom Ray resource (repeatable).")
@click.option("--env", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
@click.option("--secret-env", multiple=True, metavar="K=V", help="Secret environment variable: sealed at rest, "
              "shown as ***, masked in the logs (repeatable).")
@click.option("--tenant", help="Submit for this tenant (admins; members submit to their own).",
              shell_complete=tenant_names)
@click.option("--workdir", metavar="DIR", help="Working directory on the node [default: current directory].")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Kill an attempt after this long (FAILED, "
              "reason timeout)  [default: the daemon's job_timeout]")
@click.option("--after", multiple=True, metavar="JOB", help="Start only after JOB completed (repeatable or "
              "comma-separated); if JOB fails or is cancelled, this job is cancelled.")
@click.option("--retries", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="Retry a failed attempt this many times.")
@click.option("--retry-delay", type=click.FloatRange(0), default=0, show_default=True, metavar="SECONDS",
              help="Wait before the first retry.")
@click.option("--retry-backoff", type=click.FloatRange(1, 100), default=1, show_default=True, metavar="BASE",
              help="Multiply the delay by BASE after each failed attempt (capped at 1h).")
@click.option("--command", "force_command", is_flag=True, help="Treat the first word as a command even if it "
              "is a local file (do not ship it).")
@click.option("--wait", is_flag=True, help="Follow the logs and wait; exit 0 only if the job COMPLETED.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the job id.")
@json_option
@pass_ctx
def submit(ctx: Ctx, argv: tuple[str, ...], name: str | None, cpu: float | None, memory: str | None,
           gpu: float | None, resource: tuple[str, ...], env: tuple[str, ...], secret_env: tuple[str, ...],
           tenant: str | None, workdir: str | None, priority: int, timeout: float | None, after: tuple[str, ...],
           retries: int, retry_delay: float, retry_backoff: float, force_command: bool, wait: bool, quiet: bool,
           as_json: bool) -> None:
    """Submit a script (its content is shipped) or a command.

    \b
      sage-ops submit analysis.py --cpu 2 -- --input data.csv
      sage-ops submit --memory 512MiB --wait -- python -c 'print("hi")'
      sage-ops submit --after $A --retries 3 --retry-delay 60 --retry-backoff 2 train.py
    Options go before `--`; everything after it is the job's own argv.
    """
    stray = [a for a in argv[1:] if a.split("=", 1)[0] in SUBMIT_OPTION_NAMES]
    if stray:
        click.echo(f"note: {', '.join(stray)} after the script/command is passed to the job; put sage-ops "
                   "options before it (or before --)", err=True)
    spec = build_spec(argv, command=force_command, name=name, cpu=cpu, memory=memory, gpu=gpu, resource=resource,
                      env=env, secret_env=secret_env, tenant=tenant, workdir=workdir, priority=priority,
                      timeout=timeout,
                      dependencies=[j.strip() for a in after for j in a.split(",") if j.strip()],
                      retry_policy={"max_retries": retries, "retry_delay": retry_delay,
                                    "retry_exponential_base": retry_backoff})
    client = ctx.client()
    job = client.submit_job(spec)
    if as_json:
        render.print_json(job)
    elif quiet:
        click.echo(job.id)
    elif job.status is not JobStatus.REJECTED:
        click.echo(f"submitted job {job.id} ({job.name}) {job.status.value}", err=wait)
    if job.status is JobStatus.REJECTED:
        raise SageOpsError(f"job {job.id} rejected: {job.reason}")
    if wait:
        if not (quiet or as_json):
            for entry in client.stream_job_logs(job.id):
                click.echo(render.log_line(entry, timestamps=False))
        final = client.wait(job.id)
        click.echo(f"job {final.id} {final.status.value}" + (f": {final.reason}" if final.reason else ""), err=True)
        if final.status is not JobStatus.COMPLETED:
            sys.exit(EXIT_FAILED)


DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]


class When(click.ParamType):
    """A moment: local date/time, or an age back from now (`1h`, `30m`, `2d`, `1w`)."""

    name = "WHEN"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        if text[-1:].isalpha():  # an age: the same units as everywhere (parse_window)
            try:
                return datetime.now().astimezone() - timedelta(seconds=parse_window(text.lower()))
            except ValueError:
                pass
        for fmt in DATE_FORMATS:
            try:
                return datetime.strptime(text, fmt)
            except ValueError:
                pass
        self.fail(f"{value!r} is neither a time (YYYY-MM-DD[ HH:MM[:SS]]) nor an age (1h, 30m, 2d)", param, ctx)


WHEN = When()


def filter_options(f: Any) -> Any:
    """--status/--name/--tenant/--since/--until: one filter shape for listings and bulk actions."""
    for opt in reversed([
        click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in JobStatus],
                     case_sensitive=False), help="Only these statuses (repeatable)."),
        click.option("--name", help="Only names matching this glob (e.g. 'sweep-*')."),
        click.option("--tenant", help="Only this tenant's jobs.", shell_complete=tenant_names),
        click.option("--since", type=WHEN, help="Created at or after: local time, or an age such as 1h, 30m, 2d."),
        click.option("--until", type=WHEN, help="Created before (local time, or an age)."),
    ]):
        f = opt(f)
    return f




def job_filter(statuses: Sequence[str], name: str | None, tenant: str | None, since: Any, until: Any) -> dict[str, Any]:
    local = [None if t is None else t.astimezone() for t in (since, until)]
    return {"status": [s.upper() for s in statuses], "name": name, "tenant": tenant, "since": local[0],
            "until": local[1]}


@cli.command()
@filter_options
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000), help="Jobs per page.")
@click.option("--cursor", help="Start after this page cursor (printed at the end of a full page).")
@output_option()
@pass_ctx
def jobs(ctx: Ctx, statuses: tuple[str, ...], name: str | None, tenant: str | None, since: Any, until: Any,
         limit: int, cursor: str | None, out: Output) -> None:
    """List jobs, newest first, one page at a time.

    \b
      sage-ops jobs --status RUNNING -o wide
      sage-ops jobs -o json | jq -r '.[].id'
      sage-ops jobs -q --status FAILED --since 1h | xargs sage-ops retry
    """
    page = ctx.client().list_jobs(**job_filter(statuses, name, tenant, since, until), limit=limit, cursor=cursor,
                                  page=True)
    # a plain list, as scripts expect; the cursor goes to stderr
    out.emit(page.jobs, lambda: render.jobs_table(page.jobs, wide=out.wide))
    if page.next_cursor:
        click.echo(f"more: sage-ops jobs --cursor {page.next_cursor} ...", err=True)


@cli.command()
@click.argument("job_id", shell_complete=job_ids())
@output_option()
@pass_ctx
def status(ctx: Ctx, job_id: str, out: Output) -> None:
    """A job's full record, with its attempts."""
    job = ctx.client().get_job(job_id)
    out.emit(job, lambda: render.job_detail(job))


@cli.command()
@click.argument("job_id", shell_complete=job_ids(("RUNNING",)))
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--tail", type=click.IntRange(0), help="Only the last N lines.")
@click.option("--timestamps/--no-timestamps", default=True, show_default=True)
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def logs(ctx: Ctx, job_id: str, follow: bool, tail: int | None, timestamps: bool, out: Output) -> None:
    """A job's stdout/stderr lines (kept by the daemon); -o json prints one JSON object per line."""
    for entry in ctx.client().stream_job_logs(job_id, follow=follow, tail=tail):
        out.line(entry) if out.machine else click.echo(render.log_line(entry, timestamps))


@cli.command()
@click.argument("job_id", shell_complete=job_ids())
@output_option(quiet=False, formats=("json", "yaml"))
@pass_ctx
def result(ctx: Ctx, job_id: str, out: Output) -> None:
    """The JSON the job set with sage_ops.job.set_result()."""
    client = ctx.client()
    value = client.get_job_result(job_id)
    if value is None:
        job = client.get_job(job_id)
        raise SageOpsError(f"job {job_id} has no result ({job.status.value})")
    out.emit(value)


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, shell_complete=job_ids(ACTIVE))
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 1).")
@output_option(quiet=False)
@pass_ctx
def wait(ctx: Ctx, job_ids: tuple[str, ...], timeout: float | None, out: Output) -> None:
    """Wait for jobs to end: exit 0 if all COMPLETED, 1 otherwise."""
    client = ctx.client()
    deadline = None if timeout is None else time.monotonic() + timeout
    views: list[JobView] = []
    from .progress import Progress

    with Progress(len(job_ids), tty=None if len(job_ids) > 1 else False) as bar:
        for job_id in job_ids:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            views.append(client.wait(job_id, left))
            if len(job_ids) > 1:
                v = views[-1]
                bar.update("jobs", f"{v.id} {v.status.value}", len(views),
                           line=f"wait: {len(views)}/{len(job_ids)} ended ({v.id} {v.status.value})")
    out.emit(views, lambda: [click.echo(f"{v.id} {v.status.value}" + (f" ({v.reason})" if v.reason else ""))
                             for v in views])
    if not all(v.status is JobStatus.COMPLETED for v in views):
        sys.exit(EXIT_FAILED)


@cli.command()
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def health(ctx: Ctx, out: Output) -> None:
    """Daemon, database and Ray health (exit 1 if degraded, 3 if unreachable)."""
    h = ctx.client().health_check()
    out.emit(h, lambda: render.health(h))
    if h.status != "ok":
        sys.exit(EXIT_FAILED)


@cli.command()
@click.option("--chart", is_flag=True, help="Charts of the series: jobs finished/min, queue depth, CPU and memory "
              "use (plain numbers when not on a terminal).")
@click.option("--window", metavar="AGE", help="How far back the series goes: 90s, 15m, 1h, 2d, 1w [default: 1h].")
@click.option("--width", type=click.IntRange(40, 1000), help="Chart width (default: the terminal's).")
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def stats(ctx: Ctx, chart: bool, window: str | None, width: int | None, out: Output) -> None:
    """Job counts by status; with --chart or --window, the sampled series (throughput, queue,
    utilization) over the window."""
    if not chart and window is None:
        s = ctx.client().get_statistics()
        out.emit(s, lambda: render.stats(s))
        return
    from .. import charts

    try:
        seconds = parse_window(window or "1h")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--window") from None
    series = ctx.client().metrics_series(seconds)
    if out.machine:
        out.emit(series)
    elif sys.stdout.isatty() or width:
        size = os.get_terminal_size() if sys.stdout.isatty() else os.terminal_size((100, 40))
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        click.echo(charts.charts(series, width or size.columns, None, color))
    else:
        click.echo(charts.numbers(series))


from . import access, completion, daemon, doctor, nodes, scheduling, settings, tui  # noqa: E402, F401 - register their commands


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: one clear line on stderr for any error; exit 2 for usage, 1 for failures."""
    try:
        cli.main(args=argv, prog_name="sage-ops", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except DaemonUnavailable as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    except SageOpsError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(EXIT_FAILED)
    except click.exceptions.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)

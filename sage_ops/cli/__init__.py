"""`sage-ops`: thin click commands (parse -> client -> render). Rules live in the daemon.

Start-up is most of a command's time, so this package imports only click and the standard
library: each command's module is imported when that command runs (`LazyGroup`), and the common
commands (cli/jobs.py) talk to the daemon through wire.py and print with plaintext.py, never
touching httpx, rich or the pydantic models (tests/test_cli_imports.py keeps it so)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import __version__
from ..errors import DaemonUnavailable, SageOpsError
from ..lifecycle import JobStatus
from ..units import parse_duration
from .completers import status_names, tenant_names

if TYPE_CHECKING:
    from ..client import JobManagerClient
    from ..config import Config
    from ..wire import WireClient

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3  # documented in the README and man sage-ops
# what a command that waited for a job returns when it has no code of the job's own to pass on
# (cli/progress.py; README "Exit status"): GNU timeout's, docker run's, the shell's 128+SIGINT/SIGTERM
EXIT_WAIT_TIMEOUT, EXIT_NO_CODE, EXIT_INTERRUPTED, EXIT_CANCELLED = 124, 125, 130, 143

#: command -> the module of this package that defines it (imported on first use)
COMMANDS = {
    "submit": "jobs", "jobs": "jobs", "status": "jobs", "logs": "jobs", "result": "jobs", "wait": "jobs",
    "health": "jobs", "stats": "jobs",
    "cancel": "scheduling", "retry": "scheduling", "set-priority": "scheduling", "history": "scheduling",
    "graph": "scheduling", "submit-batch": "scheduling", "hold": "scheduling", "release": "scheduling",
    "update": "scheduling",
    "tenant": "access", "token": "access", "whoami": "access", "audit": "access",
    "gc": "gc",
    "daemon": "daemon", "nodes": "nodes", "pools": "pools", "doctor": "doctor", "config": "settings",
    "completion": "completion",
    "man": "completion", "tui": "tui", "web": "web",
}


class LazyGroup(click.Group):
    """The root group: lists every command from COMMANDS, and imports a command's module (which
    registers it with `@cli.command()`) only when that command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"{__name__}.{COMMANDS[cmd_name]}")
        return self.commands.get(cmd_name)


class Ctx:
    def __init__(self, address: str | None, config_path: str | None, token: str | None = None,
                 ca: str | None = None, insecure: bool = False) -> None:
        self.address = address
        self.config_path = config_path
        self.token, self.ca, self.insecure = token, ca, insecure
        self._client: JobManagerClient | None = None
        self._wire: WireClient | None = None

    def config(self, **overrides: Any) -> Config:
        from ..config import load_config

        return load_config(self.config_path, **overrides)

    def target(self, cfg: Config | None = None) -> tuple[str, str]:
        """The daemon's address and what named it: --address, $SAGE_OPS_ADDRESS, else the config's
        socket (`cfg`, or the config as read now: without validating it all when it can)."""
        if self.address:
            return self.address, "--address"
        if os.environ.get("SAGE_OPS_ADDRESS"):
            return os.environ["SAGE_OPS_ADDRESS"], "$SAGE_OPS_ADDRESS"
        if cfg is None:
            from ..configfile import client_socket

            socket = client_socket(self.config_path)
            if socket is not None:
                return f"unix://{socket}", "jobmanager.socket"
            cfg = self.config()
        return f"unix://{cfg.jobmanager.socket}", "jobmanager.socket"

    def _options(self, address: str, timeout: float | None) -> dict[str, Any]:
        """One address: fail fast; several: ride out a failover between them."""
        extra = {} if timeout is None else {"timeout": timeout}
        return {"retry_attempts": 1 if "," not in address else 3, "ca": self.ca, "insecure": self.insecure, **extra}

    def client(self, timeout: float | None = None) -> JobManagerClient:
        """The Python client (pydantic models): for the commands off the common path."""
        if self._client is None:
            from ..client import JobManagerClient

            address = self.target()[0]
            self._client = JobManagerClient(address, config=self._options(address, timeout), token=self.token)
        return self._client

    def wire(self, timeout: float | None = None) -> WireClient:
        """The daemon's answers as plain JSON, with nothing heavy imported: the common commands."""
        if self._wire is None:
            from ..wire import Options, WireClient

            address = self.target()[0]
            self._wire = WireClient(address, Options(**self._options(address, timeout)), self.token)
        return self._wire


pass_ctx = click.make_pass_decorator(Ctx)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")


def ray_version() -> str:
    """Ray's version, from the name of its installed metadata folder: importing Ray takes seconds,
    and even importlib.metadata costs more than the rest of `--version`."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("ray-") and name.endswith((".dist-info", ".egg-info")):
                return name[4:].rsplit(".", 1)[0].split("-")[0]
    return "not installed"


def _versions(ctx: click.Context, value: bool) -> None:
    """sage-ops, Ray and Python."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"sage-ops {__version__}\nray {ray_version()}\npython {sys.version.split()[0]} ({sys.executable})")
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--address", metavar="ADDR", help="unix:///path.sock, HOST:PORT or tcp://HOST:PORT; comma-separated "
              "for failover. Default: $SAGE_OPS_ADDRESS, then the config's socket.")
@click.option("--config", "config_path", metavar="FILE", envvar="SAGE_OPS_CONFIG", help="YAML config file.")
@click.option("--token-file", metavar="FILE", envvar="SAGE_OPS_TOKEN_FILE", type=click.Path(dir_okay=False),
              help="Read the bearer token from FILE ('-': stdin). Default: $SAGE_OPS_TOKEN; the local admin's token "
              "file goes only to this user's own daemon on loopback. On the Unix socket your uid speaks for you "
              "unless a token is given.")
@click.option("--token", metavar="TOKEN", help="Bearer token on the command line (visible to every local user in "
              "/proc; prefer --token-file or $SAGE_OPS_TOKEN).")
@click.option("--ca", metavar="PEM", help="CA that signed the daemon's TLS certificate (default: $SAGE_OPS_CA); "
              "TCP then uses TLS.")
@click.option("--insecure", is_flag=True, help="Send the token over plain HTTP to an address that is not "
              "loopback all the same (anyone on the path can read it).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=lambda c, _p, v: _versions(c, v),
              help="Print the versions of sage-ops, Ray and Python, and exit.")
@click.pass_context
def cli(ctx: click.Context, address: str | None, config_path: str | None, token_file: str | None, token: str | None,
        ca: str | None, insecure: bool) -> None:
    """sage-ops: a terminal-first job manager for Ray clusters."""
    if token and token_file:
        raise click.UsageError("give --token or --token-file, not both")
    if token:
        click.echo("warning: --token is visible to every local user in /proc/*/cmdline; use --token-file or "
                   "$SAGE_OPS_TOKEN", err=True)
    ctx.obj = Ctx(address, config_path, token or (read_secret_file(token_file, "--token-file") if token_file
                                                  else None), ca, insecure)


def read_secret_file(name: str, what: str) -> str:
    """A secret from a file ('-': stdin), stripped; one line of error when it cannot be read."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {name}: {exc.strerror if isinstance(exc, OSError) else exc}",
                                 param_hint=what) from None
    if not text.strip():
        raise click.BadParameter(f"{name} is empty", param_hint=what)
    return text.strip()


# -- shared by the commands' modules -----------------------------------------------------------
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]


class When(click.ParamType):
    """A moment: local date/time, or an age back from now (`1h`, `30m`, `2d`, `1w`)."""

    name = "WHEN"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        if text[-1:].isalpha():  # an age: the same units as every duration (units.parse_duration)
            try:
                return datetime.now().astimezone() - timedelta(seconds=parse_duration(text))
            except ValueError:
                pass
        for fmt in DATE_FORMATS:
            try:
                return datetime.strptime(text, fmt)
            except ValueError:
                pass
        self.fail(f"{value!r} is neither a time (YYYY-MM-DD[ HH:MM[:SS]]) nor an age (1h, 30m, 2d)", param, ctx)


WHEN = When()


class Duration(click.ParamType):
    """Seconds, as every option that takes a duration reads it: 90, 90s, 15m, 1h, 2d, 1w."""

    name = "DURATION"

    def __init__(self, zero: bool = False) -> None:
        self.zero = zero  # 0 is a value (no delay), not a mistake

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value, zero=self.zero)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION, DELAY = Duration(), Duration(zero=True)


def filter_options(f: Any) -> Any:
    """--status/--name/--tenant/--since/--until: one filter shape for listings and bulk actions."""
    for opt in reversed([
        click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in JobStatus],
                     case_sensitive=False), help="Only these statuses (repeatable).", shell_complete=status_names),
        click.option("--name", help="Only names containing this text, or matching a glob when it has * ? or [ "
                     "(e.g. 'sweep-*'); case-insensitive."),
        click.option("--tenant", help="Only this tenant's jobs.", shell_complete=tenant_names),
        click.option("--since", type=WHEN, help="Created at or after: local time, or an age such as 1h, 30m, 2d."),
        click.option("--until", type=WHEN, help="Created before (local time, or an age)."),
        click.option("--array", "array", metavar="ARRAY", help="The tasks of this array (a slice with --status "
                     "etc.); without it an array is one job and its tasks are left out."),
    ]):
        f = opt(f)
    return f


def job_filter(statuses: Sequence[str], name: str | None, tenant: str | None, since: Any, until: Any,
               array: str | None = None) -> dict[str, Any]:
    local = [None if t is None else t.astimezone() for t in (since, until)]
    return {"status": [s.upper() for s in statuses], "name": name, "tenant": tenant, "since": local[0],
            "until": local[1], "array": array}


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
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)

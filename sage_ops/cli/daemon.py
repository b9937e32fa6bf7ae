"""`sage-ops daemon start|stop|status`: run the daemon in the background (or the foreground, for
systemd), tell whether it is there and healthy, and whether the local Ray head it started runs
(and stop that too, on request: by default it outlives the daemon, as do the jobs on it)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import paths, rayhead
from ..errors import DaemonUnavailable, SageOpsError
from ..exposure import plaintext_exposure
from . import DURATION, EXIT_UNREACHABLE, Ctx, cli, pass_ctx
from .output import Output, output_option

if TYPE_CHECKING:
    from ..config import Config

STOP_RAY = "sage-ops daemon stop --ray"


@cli.group()
def daemon() -> None:
    """Start, stop and inspect the background daemon."""


DB_ENV = "SAGE_OPS_DATABASE__URL"


def _daemon_args(ctx: Ctx, tcp: str | None, db: str | None, ray_address: str | None,
                 tls: tuple[str | None, str | None] = (None, None),
                 insecure_plaintext: bool = False) -> tuple[list[str], Config]:
    """The daemon's argv (never a secret: `--db` travels in its environment, see _daemon_env) and
    the config it will run with; a plaintext TCP host beyond loopback is refused here."""
    args: list[str] = ["--insecure-plaintext"] if insecure_plaintext else []
    overrides: dict[str, Any] = {"security.insecure_plaintext": insecure_plaintext or None}
    for flag, value in zip(("tls-cert", "tls-key"), tls):
        if value:
            value = str(Path(value).resolve())
            args += [f"--{flag}", value]
            overrides[f"security.{flag.replace('-', '_')}"] = value
    if ctx.config_path:
        args += ["--config", ctx.config_path]
    if tcp:
        host, _, port = tcp.rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter("use HOST:PORT", param_hint="--tcp")
        args += ["--host", host, "--port", port]
        overrides.update({"jobmanager.host": host, "jobmanager.port": int(port)})
    if db:
        overrides["database.url"] = db
    if ray_address:
        args += ["--ray-address", ray_address]
        overrides["ray.address"] = ray_address
    cfg = ctx.config(**overrides)
    why = plaintext_exposure(cfg.jobmanager.host, bool(cfg.security.tls_cert))
    if why and not cfg.security.insecure_plaintext:
        raise click.UsageError(f"{why}: give --tls-cert and --tls-key, or --insecure-plaintext to do it anyway")
    return args, cfg


def _daemon_env(db: str | None) -> dict[str, str]:
    """The daemon's environment: `--db` rides in $SAGE_OPS_DATABASE__URL (which a flag would beat
    anyway), readable by its owner only, where its argv is readable by every local user."""
    return {**os.environ, DB_ENV: db} if db else dict(os.environ)


def _read_pid() -> int | None:
    """The running daemon's pid: the pidfile counts only while its lock is held."""
    return rayhead.daemon_pid(paths.pidfile())


@daemon.command("start")
@click.option("--tcp", metavar="HOST:PORT", help="Also listen on TCP (bearer token required).")
@click.option("--db", metavar="URL", help="Database URL (sqlite:///... or postgresql+psycopg://...). One with a "
              "password belongs in the config file (database.url) or $SAGE_OPS_DATABASE__URL: here it is visible in "
              "/proc while this command runs (never in the daemon's).")
@click.option("--ray-address", metavar="ADDR", help="'auto', 'local' or HOST:PORT of a Ray head.")
@click.option("--tls-cert", metavar="PEM", help="Serve TCP over TLS with this certificate (and --tls-key).")
@click.option("--tls-key", metavar="PEM", help="The certificate's private key.")
@click.option("--insecure-plaintext", is_flag=True, help="Allow --tcp on a host that is not loopback without TLS "
              "(bearer tokens then cross the network in clear).")
@click.option("--foreground", is_flag=True, help="Run in this terminal (for systemd and debugging).")
@click.option("--timeout", type=DURATION, default=180.0, show_default=True, help="How long to wait until the daemon is "
              "healthy (seconds, or 90s, 5m).")
@pass_ctx
def daemon_start(ctx: Ctx, tcp: str | None, db: str | None, ray_address: str | None, tls_cert: str | None,
                 tls_key: str | None, insecure_plaintext: bool, foreground: bool, timeout: float) -> None:
    """Start the daemon (SQLite + a local Ray head unless configured otherwise)."""
    from ..client import JobManagerClient
    from ..config import redact_url

    if db and redact_url(db) != db:
        click.echo("warning: the password in --db is visible to every local user in /proc/*/cmdline while this "
                   "command runs; put it in the config file (database.url) or $SAGE_OPS_DATABASE__URL", err=True)
    args, cfg = _daemon_args(ctx, tcp, db, ray_address, (tls_cert, tls_key), insecure_plaintext)
    cmd = [sys.executable, "-m", "sage_ops.server", *args]
    env = _daemon_env(db)
    if foreground:  # systemd's way: the log also goes to stderr, i.e. the journal
        os.execve(sys.executable, [*cmd, "--log-stderr"], env)
    pid = _read_pid()
    if pid:
        click.echo(f"daemon already running (pid {pid})")
        return
    out_file = paths.ensure_dir(paths.state_dir()) / "daemon.out"
    with open(out_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                close_fds=True, env=env)
    client = JobManagerClient(f"unix://{cfg.jobmanager.socket}", config={"retry_attempts": 1, "timeout": 5})
    deadline = time.monotonic() + timeout
    health = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = out_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise SageOpsError(f"the daemon exited (code {proc.returncode}): {tail[0]}")
        try:
            health = client.health_check()
            # ready: leading with Ray connected, or a standby behind a live leader (it reaches Ray
            # when elected); right after start the role is not settled yet
            lead = health.leader or {}
            if health.ray.connected or (health.role == "standby" and (lead.get("expires_in_s") or 0) > 0):
                break
        except DaemonUnavailable:
            pass
        time.sleep(0.1)
    else:
        detail = f": {health.ray.detail}" if health and health.ray.detail else ""
        raise SageOpsError(f"the daemon (pid {proc.pid}) is up but not ready after {timeout:.0f}s{detail}; "
                           f"see {cfg.logging.file}")
    tcp_part = f", tcp {health.tcp}" if health.tcp else ""
    lead = health.leader or {}
    where = (f"standby; the leader is {lead.get('address') or lead.get('holder')}" if health.role == "standby"
             else f"ray {health.ray.address}")
    click.echo(f"daemon started (pid {proc.pid}) on unix://{cfg.jobmanager.socket}{tcp_part}; {where}")
    if health.tcp:
        click.echo(f"TCP clients need a token: {paths.token_file()} is sent to this daemon on loopback only; "
                   "elsewhere give --token-file FILE or $SAGE_OPS_TOKEN")


@daemon.command("stop")
@click.option("--ray", "with_ray", is_flag=True,
              help="Also stop the local Ray head this daemon started: all its processes (and the jobs running "
                   "on it), and its temp dir. Done even when the daemon is not running.")
@click.option("--timeout", type=DURATION, default=60.0, show_default=True, help="How long to wait for the daemon to "
              "exit (seconds, or 90s, 5m).")
@pass_ctx
def daemon_stop(ctx: Ctx, with_ray: bool, timeout: float) -> None:
    """Stop the daemon. Running jobs keep running in Ray and are picked up on the next start: the
    local Ray head the daemon started keeps running too, unless --ray is given (exit 1 if
    something could not be stopped)."""
    pid = _read_pid()
    if not pid:
        click.echo("daemon is not running")
    else:
        with_head = "; its Ray head was left running" if with_ray else ""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while rayhead.alive(pid):
            if time.monotonic() > deadline:
                raise SageOpsError(f"the daemon (pid {pid}) did not stop within {timeout:.0f}s{with_head}")
            time.sleep(0.1)
        click.echo(f"daemon stopped (pid {pid})")
    if not with_ray:
        head = rayhead.find(paths.state_dir())
        if head.running:
            click.echo(f"{head.describe()} keeps running for the jobs on it; to stop it too: {STOP_RAY}")
        return
    head, left = rayhead.stop(paths.state_dir())
    where = head.address or str(head.temp_dir)
    if left:
        raise SageOpsError(f"could not stop {len(left)} process(es) of the Ray head at {where} "
                           f"(pids {' '.join(map(str, left))})")
    if head.running:
        click.echo(f"Ray head stopped ({where}, {len(head.pids)} processes); removed {head.temp_dir}")
    else:
        click.echo("no Ray head of this state dir was running")


@daemon.command("status")
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def daemon_status(ctx: Ctx, out: Output) -> None:
    """Is the daemon running, and how is it? And the local Ray head it started: its address and the
    memory of its processes (exit 3 when the daemon is not running)."""
    pid = _read_pid()
    head = rayhead.find(paths.state_dir())
    view = head.view()
    try:
        h = ctx.client().health_check()
    except DaemonUnavailable:
        def table() -> None:
            click.echo("daemon is not running" if not pid else f"daemon pid {pid} is not answering")
            click.echo(f"{head.describe()}; stop it: {STOP_RAY}" if head.running else head.describe())

        out.emit({"running": False, "pid": pid, "ray_head": view}, table)
        sys.exit(EXIT_UNREACHABLE)

    def health_table() -> None:
        from .. import render

        render.health(h)
        click.echo(head.describe())

    out.emit({**h.model_dump(mode="json"), "ray_head": view}, health_table)


@daemon.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (across rotations) until interrupted.")
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(0), help="Print the last N lines.")
@pass_ctx
def daemon_logs(ctx: Ctx, follow: bool, lines: int) -> None:
    """The daemon's own log (logging.file in the config), like `tail [-f]`.

    \b
      sage-ops daemon logs -n 200
      sage-ops daemon logs -f | grep -i error
    """
    file = ctx.config().logging.file
    if not file.exists() and not follow:
        raise SageOpsError(f"no daemon log at {file} (has the daemon run with this config?)")
    for line in tail_lines(file, lines):
        click.echo(line)
    if follow:
        for line in follow_file(file):
            click.echo(line)


def tail_lines(file: Path, n: int) -> list[str]:
    """The last `n` lines of `file` (read from the end: a log may be large)."""
    if n == 0 or not file.exists():
        return []
    with open(file, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = pos = f.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            pos = max(0, pos - 65536)
            f.seek(pos)
            data = f.read(end - pos)
    return data.decode("utf-8", "replace").splitlines()[-n:]


def follow_file(file: Path, poll: float = 0.25) -> Iterator[str]:
    """Lines appended to `file` from now on; a rotation (a new inode, or a shorter file) is
    followed to the new file from its start, as `tail -F` does."""
    f = None
    inode, where = None, 0
    try:
        if file.exists():
            f = open(file, "rb")  # noqa: SIM115 - kept open across iterations
            f.seek(0, os.SEEK_END)
            inode, where = os.fstat(f.fileno()).st_ino, f.tell()
        held = b""
        while True:
            if f is not None:
                chunk = f.read()
                if chunk:
                    where += len(chunk)
                    held += chunk
                    *done, held = held.split(b"\n")
                    for line in done:
                        yield line.decode("utf-8", "replace")
                    continue
            try:
                st = os.stat(file)
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_ino != inode or st.st_size < where):  # rotated or truncated
                if f is not None:
                    f.close()
                f = open(file, "rb")  # noqa: SIM115
                inode, where, held = os.fstat(f.fileno()).st_ino, 0, b""
                continue
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()

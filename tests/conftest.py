"""Real parts: one Ray head per test session, real daemons in their own processes (each with
its own HOME/XDG dirs), real SQLite files and real Unix/TCP sockets. The session leaves no
process behind: what it started and is still alive at its end is killed, and fails the session."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sage_ops import rayhead
from sage_ops.client import JobManagerClient
from sage_ops.config import RayConfig
from sage_ops.server.backend.ray_backend import LocalHead

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from harness import TempPostgres, sweep  # noqa: E402 - shared with the benchmarks

SAGE = [sys.executable, "-m", "sage_ops"]

# Every process this session starts inherits this entry (no SAGE_OPS_ prefix: Daemon and the
# benchmarks' harness pass the environment on without those): how the end of the session finds
# what is left, also re-parented to init, renamed (Ray's workers) or run as another user (PostgreSQL).
TEST_SESSION_ENV = "SGO_TEST_SESSION"
os.environ[TEST_SESSION_ENV] = uuid.uuid4().hex


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down, also on an interrupt
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill what the session left running, and fail the session, listing it."""
    lines = sweep(TEST_SESSION_ENV)
    if not lines:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True)
        else:
            print(line, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _umask_kept() -> Iterator[None]:
    """A test leaves the process umask as it found it (a daemon started in-process sets 077; left
    so, every later test's files and dirs would be closed to the other users some tests play)."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    after = os.umask(before)
    assert after == before, f"the test left the process umask {after:03o} (it was {before:03o})"


@pytest.fixture(scope="session")
def ray_head() -> Iterator[dict[str, str]]:
    """A Ray head for the whole session (3-4 s and ~500 MB: never one per test)."""
    root = Path(tempfile.mkdtemp(prefix="sgo-ray-", dir="/tmp"))
    head = LocalHead(root)
    env_before = dict(os.environ)
    address = head.start(RayConfig(include_dashboard=False, num_cpus=4))
    env = {**head.env(), "SAGE_OPS_RAY__ADDRESS": address}
    try:
        yield env
    finally:
        head.stop()
        os.environ.clear()
        os.environ.update(env_before)
        shutil.rmtree(root, ignore_errors=True)


class Daemon:
    """A sage-ops daemon in its own process with isolated state; drive it by CLI or client."""

    def __init__(self, ray_env: dict[str, str], config: dict[str, Any] | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="sgo-", dir="/tmp"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_OPS_", "XDG_"))}
        self.env.update(ray_env)
        self.env.update({"HOME": str(self.home), "XDG_STATE_HOME": str(self.home / "state"),
                         "XDG_CONFIG_HOME": str(self.home / "config")})
        self.env.pop("XDG_RUNTIME_DIR", None)
        if config:
            cfg_file = self.home / "config.yaml"
            cfg_file.write_text(json.dumps(config))
            self.env["SAGE_OPS_CONFIG"] = str(cfg_file)
        self.state = self.home / "state" / "sage-ops"
        self.socket = self.state / "sage-ops.sock"

    def run(self, *args: str, timeout: float = 120, check: bool = False, input: str | None = None,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*SAGE, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input, cwd=cwd or self.home)
        if check and proc.returncode != 0:
            raise AssertionError(f"sage-ops {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run("daemon", "start", *extra, check=True, timeout=200)

    def stop(self) -> None:
        self.run("daemon", "stop", timeout=90)

    def client(self, **config: Any) -> JobManagerClient:
        return JobManagerClient(f"unix://{self.socket}", config=config or None)

    def token(self, *args: str) -> str:
        """A new API token (`token create ARGS`), as its holder gets it."""
        return json.loads(self.run("token", "create", "--json", *args, check=True).stdout)["token"]

    def submit_q(self, *args: str) -> str:
        out = self.run("submit", "-q", *args, check=True)
        return out.stdout.strip()

    def cleanup(self) -> None:
        # Jobs outlive their daemon in Ray (by design): cancel what is left so the shared test
        # cluster is free for the next test. One try: a standby refuses, and there is no leader to
        # wait for at the end of a test.
        try:
            once = self.client(timeout=30, retry_attempts=0, failover_timeout=0)
            once.cancel_jobs(status=["SUBMITTED", "PENDING", "RUNNING"])
        except Exception:  # noqa: BLE001 - not running, or nothing to cancel
            pass
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(ray_head: dict[str, str]) -> Iterator[Daemon]:
    d = Daemon(ray_head)
    d.start()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def new_daemon(ray_head: dict[str, str]) -> Iterator[Any]:
    """Factory for a daemon of a test's own (restarts, TCP, config)."""
    made: list[Daemon] = []

    def make(config: dict[str, Any] | None = None) -> Daemon:
        d = Daemon(ray_head, config)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()


def wait_until(predicate: Any, timeout: float = 30, interval: float = 0.05) -> Any:
    """Poll for a behaviour (never asserts on time itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached")


pid_alive = rayhead.alive  # a zombie is dead for our purposes


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A real PostgreSQL server of its own (initdb + pg_ctl as the `postgres` user, loopback, a
    free port); yields a factory of fresh databases: `postgres()` -> URL."""
    if not TempPostgres.available():
        pytest.skip("PostgreSQL server binaries are not installed")
    server = TempPostgres()
    try:
        yield server.new_database
    finally:
        server.stop()


class RayNode:
    """An extra Ray node on this machine joined to the session head (multi-node on loopback:
    join by host name, which Ray does not rewrite the way it rewrites 127.0.0.1). Its processes
    carry an environment mark of their own and the session of its `ray start`, as a head's do."""

    MARK_ENV = "SGO_RAY_NODE"

    def __init__(self, ray_env: dict[str, str], tag: str, cpus: int, resources: dict[str, float]) -> None:
        import socket as _socket

        self.tag = tag
        self.mark = f"{tag}-{uuid.uuid4().hex[:8]}"
        port = ray_env["SAGE_OPS_RAY__ADDRESS"].rsplit(":", 1)[1]
        env = {**os.environ, **ray_env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", self.MARK_ENV: self.mark}
        ray = Path(sys.executable).parent / "ray"  # this environment's, also when it is not on PATH
        subprocess.run([str(ray) if ray.exists() else "ray", "start", f"--address={_socket.gethostname()}:{port}",
                        "--node-ip-address=127.0.0.1",
                        f"--num-cpus={cpus}", f"--resources={json.dumps({**resources, tag: 1})}",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120,
                       start_new_session=True)

    def node_id(self) -> str | None:
        mark = re.compile(rf"--static_resource_list=(.*,)?{re.escape(self.tag)},")
        raylet = next((p.cmdline for p in rayhead.processes().values()
                       if "raylet/raylet" in p.cmdline and mark.search(p.cmdline)), None)
        return raylet.split("--node_id=")[1].split()[0] if raylet else None

    def kill(self) -> None:
        """SIGKILL every process of this node at once (raylet, its workers and agents, its log
        monitor): a lost machine."""
        pids, _ = rayhead.marked(rayhead.processes(), f"{self.MARK_ENV}={self.mark}".encode())
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


@pytest.fixture(scope="session")
def sshd() -> Iterator[Any]:
    """A real OpenSSH server on a loopback port (its sessions get a temporary HOME)."""
    from sshd import Sshd

    server = Sshd()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def wheelhouse() -> Iterator[Path]:
    """Wheels of this Ray and this sage-ops and their dependencies (`nodes add --wheel-dir`, as
    `nodes wheels` makes them): nodes install offline from them (~20 s with pip's cache, once)."""
    from sage_ops.nodes.wheels import build_wheelhouse

    dest = Path(tempfile.mkdtemp(prefix="sgo-wheels-", dir="/tmp"))
    try:
        build_wheelhouse(dest, cache=dest / ".own-wheel")
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


async def until(pilot: Any, predicate: Any, timeout: float = 60) -> Any:
    """Let a Textual app run until `predicate()` holds (a behaviour, never a time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError("condition not reached")

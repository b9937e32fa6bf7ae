"""What every benchmark shares: a private daemon (its own HOME, database and Ray head), percentiles,
memory, a minimal asyncio HTTP client over sage_ops.wire (so a figure is the daemon's, not the
Python client's), the table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from harness import sweep_at_exit

from sage_ops import wire

sweep_at_exit()  # what a benchmark starts, it stops: anything left at exit is killed and listed

TRUE: dict[str, Any] = {"command": ["true"], "resources": {"cpu": 1}}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def ms(values: list[float], p: float) -> float:
    return round(pct(values, p) * 1000, 2)


def rss_mb(pid: int) -> float:
    return rss_parts(pid).get("VmRSS", float("nan"))


def rss_parts(pid: int) -> dict[str, float]:
    """VmRSS and its parts in MB: RssAnon is the process's own heap; RssFile and RssShmem are pages
    of files it maps (SQLite's WAL index, shared libraries), which the kernel can drop."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[name] = round(int(value.split()[0]) / 1024, 1)
    return out


@contextlib.contextmanager
def bench_user() -> Iterator[str | None]:
    """A throwaway Unix user for a tenant's run_as (None where users cannot be made or switched)."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"):
        yield None
        return
    name = f"sgobench{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True,
                   capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", name], capture_output=True)


class Bench:
    """A private daemon: nothing of the user's real state is touched, and `stop` removes it all."""

    def __init__(self, home: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.home = home or Path(tempfile.mkdtemp(prefix="sgo-bench-", dir="/tmp"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_OPS_", "XDG_"))}
        self.env.update({"HOME": str(self.home), "XDG_STATE_HOME": str(self.home / "state"),
                         "XDG_CONFIG_HOME": str(self.home / "config"), "SAGE_OPS_RAY__ADDRESS": "local",
                         "SAGE_OPS_JOBMANAGER__MAX_JOBS": "10000000", **(env or {})})
        self.state = self.home / "state" / "sage-ops"
        self.socket = self.state / "sage-ops.sock"
        self.address = f"unix://{self.socket}"
        self.db = self.state / "sage-ops.db"
        self.tcp: tuple[str, int] | None = None

    def cli(self, *args: str, timeout: float = 600) -> str:
        out = subprocess.run([sys.executable, "-m", "sage_ops", *args], env=self.env, capture_output=True,
                             text=True, timeout=timeout)
        if out.returncode != 0:
            raise SystemExit(f"sage-ops {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def start(self, *args: str) -> dict[str, Any]:
        """Start the daemon (and, the first time, its Ray head); its health, with `start_s`."""
        from sage_ops.client import JobManagerClient

        t = time.perf_counter()
        self.cli("daemon", "start", *args)
        health = JobManagerClient(self.address).health_check().model_dump(mode="json")
        health["start_s"] = round(time.perf_counter() - t, 2)
        if health.get("tcp"):
            host, port = health["tcp"].rsplit(":", 1)
            self.tcp = (host, int(port))
        return health

    def token(self) -> str:
        return (self.home / "config" / "sage-ops" / "token").read_text().strip()

    def stop_daemon(self) -> None:
        self.cli("daemon", "stop")

    def stop(self) -> None:
        """Stop the daemon and the private Ray head it started (every process of it), remove the home."""
        try:
            self.cli("daemon", "stop", "--ray")
        except SystemExit as exc:
            print(f"  (stopping the daemon and its Ray head: {exc})")
        shutil.rmtree(self.home, ignore_errors=True)


class RawHTTP:
    """One keep-alive HTTP/1.1 connection on asyncio (many at once from one thread), speaking
    through sage_ops.wire's request and response code: a request costs the benchmark a few
    microseconds, so a figure is the daemon's."""

    def __init__(self, socket_path: Path | None = None, tcp: tuple[str, int] | None = None,
                 token: str | None = None) -> None:
        self.socket_path, self.tcp, self.token = socket_path, tcp, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> RawHTTP:
        if self.tcp:
            self.reader, self.writer = await asyncio.open_connection(*self.tcp)
        else:
            self.reader, self.writer = await asyncio.open_unix_connection(str(self.socket_path))
        return self

    def request_bytes(self, method: str, path: str, body: Any = None) -> bytes:
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = None if body is None else json.dumps(body).encode()
        return wire.request_bytes(method, path, "sage-ops", auth, data)

    async def _head(self) -> tuple[int, dict[str, str]]:
        assert self.reader is not None
        return wire.parse_head(await self.reader.readuntil(b"\r\n\r\n"))

    async def send(self, request: bytes) -> tuple[int, Any]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        status, headers = await self._head()
        return status, json.loads(await self.reader.readexactly(int(headers["content-length"])))

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.send(self.request_bytes(method, path, body))

    async def stream(self, path: str) -> AsyncIterator[bytes]:
        """The body of a streamed (chunked) GET, chunk by chunk, as the daemon sends it."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.request_bytes("GET", path))
        status, _ = await self._head()
        if status != 200:
            raise SystemExit(f"GET {path}: HTTP {status}")
        while True:
            size = wire.chunk_size(await self.reader.readuntil(b"\r\n"))
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return
            data = await self.reader.readexactly(size + 2)
            yield data[:-2]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def table(figures: dict[str, dict[str, Any]], goals: dict[str, str]) -> str:
    """One row per figure: scenario, figure, value, goal."""
    rows = [("scenario", "figure", "value", "goal")]
    for scenario, values in figures.items():
        for key, value in values.items():
            if isinstance(value, (dict, list)):
                continue
            shown = (f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int)
                     else str(value))
            rows.append((scenario, key, shown, goals.get(key, "")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i != 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def remove_nodes(cli: Any, names: list[str]) -> None:
    """`nodes remove --force` each of `names` through `cli` (a Bench's), whatever state they are in."""
    for name in names:
        try:
            cli("nodes", "remove", name, "--force")
        except SystemExit:
            pass

"""Pieces the benchmarks and the tests share: a throwaway PostgreSQL server, and the sweep that
makes a benchmark run leave no process behind."""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from itertools import count
from pathlib import Path

RUN_ENV = "SGO_BENCH_RUN"


def leftovers(marker_env: str = RUN_ENV) -> dict[int, str]:
    """The processes this run started (they inherit `marker_env` from os.environ; see
    sage_ops.rayhead for how renamed and re-parented ones are found) still alive, with their
    command lines."""
    from sage_ops import rayhead

    procs = rayhead.processes()
    pids, _ = rayhead.marked(procs, f"{marker_env}={os.environ[marker_env]}".encode(), any_user=True)
    return {pid: procs[pid].cmdline for pid in pids if pid in procs}


def sweep(marker_env: str = RUN_ENV) -> list[str]:
    """Kill what this run left running; one line per process (none: nothing was left)."""
    from sage_ops import rayhead

    left = leftovers(marker_env)
    if not left:
        return []
    survivors = rayhead.terminate(lambda: set(leftovers(marker_env)))
    return [f"{len(left)} process(es) started by this run were still running at the end (killed"
            f"{'; these survived: ' + ' '.join(map(str, survivors)) if survivors else ''}):",
            *(f"  {pid} {cmd[:160]}" for pid, cmd in sorted(left.items()))]


def _sweep() -> None:
    lines = sweep()
    if not lines:
        return
    print("error: " + "\n".join(lines), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # atexit cannot change the exit status otherwise; this handler runs last


def sweep_at_exit() -> None:
    """Mark every process this benchmark run starts from now on, and at exit kill and list (exit
    1) those still running: a benchmark must stop what it starts. Under pytest (which sweeps its
    own session) or in a nested run, nothing is done."""
    if RUN_ENV in os.environ or "SGO_TEST_SESSION" in os.environ:
        return
    os.environ[RUN_ENV] = uuid.uuid4().hex
    atexit.register(_sweep)


class TempPostgres:
    """A real PostgreSQL of its own: initdb + pg_ctl as the `postgres` user (initdb refuses root),
    loopback only, a free port, a temporary directory; `new_database()` -> an SQLAlchemy URL."""

    def __init__(self) -> None:
        self.bindir = self.bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="sgo-pg-", dir="/tmp"))
        pg = pwd.getpwnam("postgres")
        os.chown(self.root, pg.pw_uid, pg.pw_gid)
        self.data = self.root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        try:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start", "-o",
                      f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200")
        except BaseException:
            self.stop()  # a server that started but did not answer in time
            raise
        self._names = count()

    @staticmethod
    def bin_dir() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            raise FileNotFoundError("PostgreSQL server binaries are not installed (apt-get install postgresql)")
        return found[-1].parent

    @classmethod
    def available(cls) -> bool:
        try:
            cls.bin_dir()
            pwd.getpwnam("postgres")
            return True
        except (FileNotFoundError, KeyError):
            return False

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / tool), *args], check=True,
                       capture_output=True)

    def new_database(self) -> str:
        import psycopg

        name = f"sageops{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def _postmaster(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def _alive(self, pid: int) -> bool:
        """Is `pid` still this server's postmaster (not a zombie, not a reused pid)?"""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z" and str(self.data).encode() in cmdline

    def stop(self) -> None:
        """pg_ctl's fast shutdown; should it fail, the server is killed (its children exit with it)."""
        pid = self._postmaster()
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                        "fast", "-w", "-t", "30", "stop"], capture_output=True)
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            if pid is None or not self._alive(pid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while self._alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)

"""A job's process group, as the runner on a Ray worker starts, watches and ends it: the job
runs as the leader of its own session, a watchdog kills its group if the worker dies, and
`kill_group` ends it (TERM, then KILL) without ever signalling a reused pid.

Imported on Ray workers: standard library only.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from typing import IO

# The job runs as the leader of its own session. One watchdog per Ray worker process (started
# once, in a session of its own) learns each job's process group through a pipe whose write end
# only the worker holds: if the worker dies for any reason it reads EOF and kills the groups of
# the jobs that were still running. (A watchdog per job cost ~1.2 ms of CPU per job.) It forks
# away from the worker first: when Ray force-kills a worker (ray.cancel(force=True)) it also kills
# the worker's direct children — the job's leader, and a watchdog that stayed a child — which left
# the rest of a job's group running, orphaned. A job held in a cgroup (containment.Jail) is told
# with its cgroup: the watchdog kills everything in it, `setsid` descendants too.
WATCHDOG = """
import os, signal, sys, time
if os.fork():
    os._exit(0)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
live = {}
for line in sys.stdin:
    op, pg, *cg = line.split()
    if op == "+":
        live[int(pg)] = cg  # the job's cgroups, the one that holds its processes first
    else:
        live.pop(int(pg), None)
def put(path, value):
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass
for pg, cgroups in live.items():
    try:
        os.killpg(pg, signal.SIGKILL)
    except OSError:
        pass
    if not cgroups:
        continue
    cg = cgroups[0]
    put(os.path.join(cg, "cgroup.kill"), "1")
    freezer = os.path.exists(os.path.join(cg, "freezer.state"))
    for _ in range(1000):
        try:
            with open(os.path.join(cg, "cgroup.procs")) as f:
                pids = [int(x) for x in f.read().split()]
        except OSError:
            break
        if not pids:
            break
        if freezer:
            put(os.path.join(cg, "freezer.state"), "FROZEN")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if freezer:
            put(os.path.join(cg, "freezer.state"), "THAWED")
    left = list(cgroups)
    for _ in range(100):  # a killed process leaves its cgroups a moment after it died
        for path in list(left):
            try:
                os.rmdir(path)
            except OSError:
                continue
            left.remove(path)
        if not left or not any(map(os.path.isdir, left)):
            break
        time.sleep(0.002)
"""


class Watchdog:
    """The worker's one watchdog, started on first use and replaced if it died."""

    pipe: IO[bytes] | None = None  # the write end; EPIPE means the watchdog is gone

    @staticmethod
    def _start() -> IO[bytes]:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", WATCHDOG], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        proc.wait()  # the first process exits at once; its child (the watchdog) holds the read end
        assert proc.stdin is not None
        return proc.stdin

    @classmethod
    def ready(cls) -> None:
        """Start it now, before a job's fork: never a child of the job's cgroup or sweep."""
        if cls.pipe is None:
            cls.pipe = cls._start()

    @classmethod
    def tell(cls, op: str, pgid: int, cgroups: tuple[str, ...] = ()) -> None:
        line = " ".join((op, str(pgid), *cgroups)) + "\n"
        for _ in range(2):  # a dead watchdog is replaced, and this message goes to the new one
            if cls.pipe is None:
                cls.pipe = cls._start()
            try:
                cls.pipe.write(line.encode())
                cls.pipe.flush()
                return
            except OSError:
                cls.pipe = None


def signal_exit(code: int) -> tuple[int, str | None]:
    if code < 0:
        name = signal.Signals(-code).name
        return 128 - code, f"killed by {name}"
    return code, None


def exited(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` for the leader to exit, without reaping it: while it is a zombie its
    pid (the group id) cannot be reused, so killing the group stays safe."""
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def kill_group(proc: subprocess.Popen[bytes], grace: float) -> resource.struct_rusage | None:
    """TERM the whole group, KILL whatever is left after `grace`, then reap the leader; its
    resource use (with all it waited for), or None if it was reaped already."""
    if proc.returncode is not None:  # reaped already: its pid may belong to someone else now
        return None
    if grace > 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        exited(proc.pid, grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    exited(proc.pid, 5)
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped elsewhere (not by this module)
        proc.wait()
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage

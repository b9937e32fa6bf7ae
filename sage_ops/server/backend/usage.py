"""What an attempt used: the CPU time and peak memory of its process tree, from the kernel's own
accounting of the processes the runner reaps (rusage; nothing is sampled).

The leader's rusage holds every process of its tree that was waited for: a job that `setpriv`
execs is the leader itself, and a shell waits for its commands. A sandboxed job with a PID
namespace of its own (bwrap --unshare-pid) is not in it: bubblewrap's monitor (the leader) exits
as soon as the namespace's init reports the job's end, without waiting for that init, which
waited for the job. For such an attempt the runner is a child subreaper: the init comes to it
when the monitor exits, and its rusage is taken too.

Imported on Ray workers: standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import time
from typing import Any

from .protocol import Measured

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
ADOPTED_WAIT = 0.2  # seconds to wait for the adopted processes to end (the init dies with its monitor)


def _prctl(option: int, arg: Any) -> int:
    return int(ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0))


def _children() -> set[int]:
    """This process's children (those of each of its threads), the dead but unreaped too."""
    out: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children", "rb") as f:
            out.update(int(p) for p in f.read().split())
    return out


class Usage:
    """The CPU seconds and peak RSS of one attempt, from the rusage of what it reaps. `adopt`:
    the job's processes that lose their parent come to this process (a child subreaper) for the
    attempt, and are reaped with their rusage."""

    def __init__(self, adopt: bool) -> None:
        self.cpu, self.rss, self.measured = 0.0, 0, False
        self.adopt = adopt
        self.before: set[int] = set()
        self.was_subreaper = True
        if adopt:
            flag = ctypes.c_int(0)
            _prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag))
            self.was_subreaper = bool(flag.value)
            if not self.was_subreaper:
                _prctl(PR_SET_CHILD_SUBREAPER, 1)
            self.before = _children()

    def add(self, usage: resource.struct_rusage | None) -> None:
        if usage is not None:
            self.measured = True
            self.cpu += usage.ru_utime + usage.ru_stime
            self.rss = max(self.rss, int(usage.ru_maxrss) * 1024)  # KiB on Linux

    def reap_adopted(self, wait: float = ADOPTED_WAIT) -> None:
        """Reap the adopted processes that have ended, waiting up to `wait` for the others; those
        still alive are the jail's to end (then this is called again)."""
        deadline = time.monotonic() + wait
        while self.adopt:
            left = _children() - self.before
            for pid in list(left):
                with contextlib.suppress(ChildProcessError):
                    got, _status, usage = os.wait4(pid, os.WNOHANG)
                    if got:
                        left.discard(pid)
                        self.add(usage)
            if not left or time.monotonic() >= deadline:
                return
            time.sleep(0.002)

    def close(self) -> None:
        """Reap what the jail ended, and stop being a subreaper if this made it one."""
        self.reap_adopted()
        if self.adopt and not self.was_subreaper:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)

    def fields(self) -> Measured:
        """What the attempt's end reports: nothing when nothing was measured (it never started)."""
        return {"cpu_seconds": round(self.cpu, 6), "max_rss_bytes": self.rss} if self.measured else {}

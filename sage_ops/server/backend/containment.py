"""Where a job's processes are held, so that cancel, timeout and the job's end reach every
descendant, also one that left the job's session (`setsid`) or was re-parented: as Slurm does,
a cgroup per attempt — cgroup v2, or v1's freezer (plus `memory` and `cpu` for the job's
requests as limits) — and where no cgroup is writable, the Ray worker becomes a child subreaper
(orphans of the job are re-parented to it, not to init) and sweeps its descendants.

The job is born inside its cgroup: the worker (it runs one task at a time) moves itself in for the
fork and back out after it, two writes per hierarchy, instead of a `preexec_fn` (a fork of the
whole worker, ~10 ms) or moving the child after the fact (a window in which it could fork away).

Imported on Ray workers: standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
import uuid
from collections.abc import Iterable, Iterator

ROOT = "/sys/fs/cgroup"
BASE = "sage-ops"  # the directory the job cgroups live in, under the worker's own cgroup
PERIOD_US = 100_000  # cpu.cfs_period_us / cpu.max period for a CPU limit
PR_SET_CHILD_SUBREAPER = 36
V1_TRACK = "freezer"  # the v1 hierarchy that holds (and freezes) every process of a job
V1_LIMITS = ("memory", "cpu")
STALE_SECONDS = 60.0  # an empty job cgroup this old is a leftover (made and entered within a fork)


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller ('' for the v2 hierarchy)."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="ascii") as f:
        for line in f:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _pids(cgroup: str) -> list[int]:
    try:
        with open(os.path.join(cgroup, "cgroup.procs"), encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except OSError:  # removed already
        return []


def _base(hierarchy: str, own: dict[str, str], make: bool) -> str | None:
    """The directory job cgroups go in for one hierarchy (made if `make`); None: not usable."""
    mount = os.path.join(ROOT, hierarchy) if hierarchy else ROOT
    if hierarchy not in own or not os.path.isdir(mount):
        return None
    home = mount + own[hierarchy].rstrip("/")
    base = os.path.join(home, BASE)
    if not make:
        return base if os.access(base if os.path.isdir(base) else home, os.W_OK) else None
    try:
        os.makedirs(base, mode=0o755, exist_ok=True)
    except OSError:
        return None
    return base if os.access(base, os.W_OK) else None


class Layout:
    """What this worker can use, found once: the kind and the base directory per hierarchy."""

    kind: str | None = None
    bases: dict[str, str] = {}
    home: dict[str, str] = {}  # the worker's own cgroup directory per hierarchy it moves in

    @classmethod
    def find(cls, make: bool = True) -> tuple[str, dict[str, str]]:
        """The kind and the bases; `make`: create the bases (a worker) and keep the answer."""
        if cls.kind is not None:
            return cls.kind, cls.bases
        own = _own_cgroups()
        kind, bases = "subreaper", {}
        if os.path.exists(os.path.join(ROOT, "cgroup.controllers")) and (base := _base("", own, make)):
            kind, bases = "cgroup v2", {"": base}
        elif base := _base(V1_TRACK, own, make):
            kind, bases = "cgroup v1", {V1_TRACK: base}
            bases.update({h: b for h in V1_LIMITS if (b := _base(h, own, make))})
        if make:
            cls.kind, cls.bases = kind, bases
            cls.home = {h: os.path.dirname(b) for h, b in bases.items()}
            if kind == "subreaper":
                _set_subreaper()
            _remove_stale(bases.values())
        return kind, bases


def mode() -> str:
    """`cgroup v2`, `cgroup v1` or `subreaper`: how jobs started by a process like this one are
    contained (a probe: nothing is created, nothing changes)."""
    return Layout.find(make=False)[0]


def _set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class Jail:
    """One attempt's processes: born inside it, all ended by `kill`, its cgroups removed by `close`."""

    def __init__(self, name: str, cpu: float = 0, memory: int = 0) -> None:
        self.kind = Layout.find()[0]
        self.dirs: dict[str, str] = {}
        self.spared: set[int] = set()  # subreaper: the worker's children that are not the job's
        self.leader = 0
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        for hierarchy, base in Layout.bases.items():
            if hierarchy in V1_LIMITS and not (memory if hierarchy == "memory" else cpu):
                continue  # a v1 limit hierarchy is joined only for a limit
            path = os.path.join(base, tag)
            try:
                os.mkdir(path, 0o755)
            except OSError:
                continue
            self.dirs[hierarchy] = path
        self._limit(cpu, memory)

    def _limit(self, cpu: float, memory: int) -> None:
        """The job's requests as limits, where the controller is there (best effort)."""
        writes = []
        if "" in self.dirs:
            if memory:
                writes.append((os.path.join(self.dirs[""], "memory.max"), str(int(memory))))
            if cpu:
                writes.append((os.path.join(self.dirs[""], "cpu.max"), f"{int(cpu * PERIOD_US)} {PERIOD_US}"))
        if memory and "memory" in self.dirs:
            writes.append((os.path.join(self.dirs["memory"], "memory.limit_in_bytes"), str(int(memory))))
        if cpu and "cpu" in self.dirs:
            writes.append((os.path.join(self.dirs["cpu"], "cpu.cfs_quota_us"), str(int(cpu * PERIOD_US))))
        for path, value in writes:
            with contextlib.suppress(OSError):
                _write(path, value)

    def cgroups(self) -> tuple[str, ...]:
        """Its cgroup directories, the tracker first (what the worker's watchdog ends and removes)."""
        tracker = self.tracker
        return (tracker, *(d for d in self.dirs.values() if d != tracker)) if tracker else ()

    @property
    def tracker(self) -> str | None:
        """The cgroup that holds every process of the job (None: the subreaper sweeps)."""
        return self.dirs.get("") or self.dirs.get(V1_TRACK)

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Around the job's fork: the worker stands in the job's cgroups, so the child is born there."""
        if self.tracker is None:
            self.spared = set(_children(os.getpid()))
            yield
            return
        # cgroup v1 moves one thread (`tasks`): the child is born where the thread that forks it
        # stands, and the worker's other threads (Ray's, a dozen or more) never move, which would
        # cost each a migration. "0" is the writing thread itself, which the kernel moves without
        # its global thread-group lock: a thread's id there takes that lock, and after a quiet
        # moment each take waits out an RCU grace period (10-20 ms here: the p99 of submit ->
        # RUNNING). v2 moves whole processes only.
        me, where = ("0", "tasks") if self.kind == "cgroup v1" else (str(os.getpid()), "cgroup.procs")
        moved = []
        try:
            for hierarchy, path in self.dirs.items():
                _write(os.path.join(path, where), me)
                moved.append(hierarchy)
            yield
        finally:
            for hierarchy in moved:
                _write(os.path.join(Layout.home[hierarchy], where), me)

    def signal(self, sig: int) -> None:
        """Send `sig` to every process of the job (a TERM before the KILL of a cancel)."""
        for pid in self._members():
            with contextlib.suppress(OSError):
                os.kill(pid, sig)

    def _members(self) -> list[int]:
        if self.tracker is not None:
            return _pids(self.tracker)
        return _descendants(os.getpid(), self.spared)

    def kill(self) -> None:
        """KILL every process of the job, until none is left (a fork during the sweep included)."""
        tracker = self.tracker
        if tracker is not None and "" in self.dirs and os.path.exists(os.path.join(tracker, "cgroup.kill")):
            with contextlib.suppress(OSError):
                _write(os.path.join(tracker, "cgroup.kill"), "1")
        freezer = self.dirs.get(V1_TRACK)
        for _ in range(1000):
            pids = self._members()
            if not pids:
                break
            if freezer is not None:  # frozen, nothing in it can fork while it is swept
                _freeze(freezer, "FROZEN")
                pids = _pids(freezer)
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                _freeze(freezer, "THAWED")
            if tracker is None:
                _reap(self.spared | {self.leader})
            time.sleep(0.001)

    def close(self) -> None:
        """End what is left and remove the job's cgroups."""
        self.kill()
        for path in self.dirs.values():
            for _ in range(100):  # a killed process leaves its cgroup a moment after it died
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.002)


def _remove_stale(bases: Iterable[str], age: float = STALE_SECONDS) -> None:
    """Remove job cgroups left empty by a worker that died with its watchdog (a head stopped
    under its jobs): an empty cgroup older than `age` is no attempt's any more."""
    for base in bases:
        with contextlib.suppress(OSError):
            for entry in os.scandir(base):
                with contextlib.suppress(OSError):
                    if entry.is_dir() and time.time() - entry.stat().st_mtime > age and not _pids(entry.path):
                        os.rmdir(entry.path)  # EBUSY if a process is in it after all


def _freeze(cgroup: str, state: str) -> None:
    path = os.path.join(cgroup, "freezer.state")
    with contextlib.suppress(OSError):
        _write(path, state)
        for _ in range(500):
            with open(path, encoding="ascii") as f:
                if f.read().strip() != "FREEZING":
                    return
            time.sleep(0.001)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process (a snapshot of /proc; zombies are dead)."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            state, parent = stat[stat.rindex(b")") + 2:].split()[:2]
            if state != b"Z":
                out[int(entry)] = int(parent)
    return out


def _children(pid: int) -> list[int]:
    return [p for p, parent in _parents().items() if parent == pid]


def _descendants(root: int, spared: set[int]) -> list[int]:
    """Every descendant of `root` but those under its `spared` children (the subreaper's sweep)."""
    parents = _parents()
    kids: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        kids.setdefault(parent, []).append(pid)
    found, todo = [], [p for p in kids.get(root, []) if p not in spared]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(kids.get(pid, []))
    return found


def _reap(spared: set[int]) -> None:
    """Collect the zombies the job's orphans left with the subreaper (never a spared child)."""
    me = str(os.getpid()).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in spared:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z" and fields[1] == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry), os.WNOHANG)

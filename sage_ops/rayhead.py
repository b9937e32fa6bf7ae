"""The local Ray head a daemon starts, as the operating system sees it: which processes are its,
how much memory they hold, and how to stop every one of them. Standard library only, so that
`daemon status`, `daemon stop --ray` and `doctor` answer without importing Ray or the server.

A head is "ours" when it was started for this state directory: its record (`head.json`) names its
temp dir, and every process of it is found by what it cannot shed:
- the environment entry HEAD_ENV=<temp dir>, which the head's processes inherit (a process that
  renames itself may overwrite it: Ray's dashboard modules do);
- the session of `ray start` (started in a session of its own), which every process of the head
  keeps, also once re-parented to init; a session counts only while its leader is gone or ours;
- descent from a process already found.
(A process that renames itself over its environment, leads a session of its own and lost its
parent would be missed: none of Ray's does.) Only processes of this user are ever considered:
another user's Ray, or another state dir's, is never touched; nor is the caller itself or any of
its ancestors.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEAD_ENV = "SAGE_OPS_RAY_HEAD"


def head_dir(state_dir: Path) -> Path:
    """Where the daemon keeps its head's record and Ray auth token."""
    return state_dir / "ray"


def record_file(state_dir: Path) -> Path:
    return head_dir(state_dir) / "head.json"


# Where heads' private dirs are made by default (ray.temp_root): /tmp keeps Ray's Unix socket paths
# short (AF_UNIX allows 107 bytes; the longest Ray makes, the dashboard's
# <temp>/session_<date>_<time>_<usec>_<pid>/sockets/dash_MetricsHead, is 95 here with a 7-digit pid,
# so a root of up to 16 bytes fits), and a name made by mkdtemp cannot be predicted or planted.
TEMP_ROOT = Path("/tmp")
TEMP_PREFIX = "sage-ops-rt-"


def new_temp_dir(root: Path = TEMP_ROOT) -> Path:
    """Ray's temp dir for a new head: `r` inside a fresh private dir (mkdtemp: a random name made
    with O_EXCL, 0700, ours) under `root` (ray.temp_root). Ray chmods its temp and session dirs 0777
    (following symlinks) and leaves its sockets there: behind a 0700 parent, no other user reaches
    any of it."""
    return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root)) / "r"


def _unsafe_root(root: Path) -> str | None:
    """Why the dir holding a private dir could let another user swap it (None: it cannot): a path
    with a symlink in it, or a dir others may write to that is not sticky (/tmp is sticky)."""
    if os.path.realpath(root) != str(root):
        return f"{root} has a symlink in its path"
    try:
        st = root.stat()
    except OSError as exc:
        return f"{root}: {exc.strerror}"
    if st.st_uid not in (0, os.getuid()):
        return f"{root} belongs to uid {st.st_uid}"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return f"{root} may be written by other users and is not sticky"
    return None


def unsafe(temp: Path) -> str | None:
    """Why `temp` is not a head temp dir of ours to use or delete (None: it is): its parent must
    be a private dir as new_temp_dir makes them, looked at without following links, in a dir
    no other user can swap it in."""
    private = temp.parent
    if temp.name != "r" or not private.name.startswith(TEMP_PREFIX) or not temp.is_absolute():
        return f"{temp} is not a temp dir sage-ops made"
    if why := _unsafe_root(private.parent):
        return why
    try:
        st = private.lstat()
    except OSError as exc:
        return f"{private}: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return f"{private} is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return f"{private} is not a directory"
    if st.st_uid != os.getuid():
        return f"{private} belongs to uid {st.st_uid}, not to us (uid {os.getuid()})"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return f"{private} has mode {stat.S_IMODE(st.st_mode):04o}, not 0700"
    return None


def remove_temp_dir(temp: Path) -> str | None:
    """Delete a head's private dir, only if it is ours (see unsafe); else say why it was left.
    Safe from other users' races: they can neither rename nor replace our entry in sticky /tmp,
    nor enter a 0700 dir, and rmtree walks by file descriptor without following links."""
    why = unsafe(temp)
    if why is None:
        shutil.rmtree(temp.parent, ignore_errors=True)
    return why


def load_record(state_dir: Path) -> dict[str, Any] | None:
    """What the daemon wrote when it started the head (address, temp dir, session, dashboard)."""
    try:
        rec = json.loads(record_file(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    sid: int
    uid: int
    cmdline: str


def _proc(pid: int) -> Proc | None:
    """One live (non-zombie) process, or None when it is gone or unreadable."""
    base = Path(f"/proc/{pid}")
    try:
        stat = (base / "stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            return None
        uid = base.stat().st_uid
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return Proc(pid, int(fields[1]), int(fields[3]), uid, cmdline)
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Is `pid` running? A zombie is not: it has let go of everything and only waits for a parent
    (an orphan's, pid 1, may take a second or more to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:  # gone since
        return False
    except (OSError, IndexError):  # there, but not ours to read
        return True
    return state not in ("Z", "X")


def processes() -> dict[int, Proc]:
    """Every live process this user may see, by pid."""
    out: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (p := _proc(int(entry.name))) is not None:
            out[p.pid] = p
    return out


def has_env(pid: int, entry: bytes) -> bool:
    """Does the process's environment (as it was exec'd) hold `entry` (b'NAME=value')?"""
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _ancestors(procs: dict[int, Proc]) -> set[int]:
    """This process and its ancestors: never ours to stop."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        pid = procs[pid].ppid if pid in procs else 1
    return out


def tree(procs: dict[int, Proc], seeds: Collection[int], sessions: Collection[int] = (),
         uid: int | None = None) -> set[int]:
    """`seeds`, every process of `sessions`, and all their descendants (of user `uid` only, unless
    None); never this process or its ancestors."""
    def fits(pid: int) -> bool:
        return uid is None or procs[pid].uid == uid

    found = set(seeds) | {p.pid for p in procs.values() if p.sid in sessions and fits(p.pid)}
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    todo = list(found)
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in found and fits(kid):
                found.add(kid)
                todo.append(kid)
    return found - _ancestors(procs)


def marked(procs: dict[int, Proc], entry: bytes, sessions: Collection[int] = (),
           any_user: bool = False) -> tuple[set[int], set[int]]:
    """The processes carrying `entry` in their environment, the members of the sessions they
    started in (and of `sessions`), and the descendants of all of those, until nothing is added;
    and those sessions. Only this user's processes, unless `any_user` (a test session's, that
    starts PostgreSQL as its own user)."""
    uid = None if any_user else os.getuid()
    found = {p.pid for p in procs.values() if (uid is None or p.uid == uid) and has_env(p.pid, entry)}
    own = os.getsid(0)
    while True:
        # a session whose leader lives and is not ours is somebody's shell: never sweep it
        swept = {s for s in {procs[pid].sid for pid in found} | set(sessions)
                 if s > 1 and s != own and (s not in procs or s in found)}
        more = tree(procs, found, swept, uid)
        if more <= found:
            return found, swept
        found |= more


@dataclass
class Head:
    """This state dir's Ray head as found on the machine right now."""

    state_dir: Path
    temp_dir: Path | None
    address: str | None = None
    dashboard: str | None = None
    pids: list[int] = field(default_factory=list)
    sessions: set[int] = field(default_factory=set)

    @property
    def running(self) -> bool:
        return bool(self.pids)

    @functools.cached_property
    def memory(self) -> tuple[int, str]:
        """(bytes, 'PSS' or 'RSS'): the sum over the head's processes. PSS splits shared pages
        among their users, so it adds up; RSS (counted twice when shared) only where PSS cannot
        be read."""
        total = {"PSS": 0, "RSS": 0}
        readable = {"PSS": True, "RSS": True}
        for pid in self.pids:
            for kind, file, key in (("PSS", "smaps_rollup", "Pss:"), ("RSS", "status", "VmRSS:")):
                try:
                    text = Path(f"/proc/{pid}/{file}").read_text()
                except FileNotFoundError:
                    continue  # gone meanwhile
                except OSError:
                    readable[kind] = False
                    continue
                line = next((ln for ln in text.splitlines() if ln.startswith(key)), None)
                total[kind] += int(line.split()[1]) * 1024 if line else 0
        kind = "PSS" if readable["PSS"] else "RSS"
        return total[kind], kind

    def view(self) -> dict[str, Any]:
        """What `daemon status --json` shows under `ray_head`."""
        out: dict[str, Any] = {"running": self.running, "address": self.address,
                               "temp_dir": str(self.temp_dir) if self.temp_dir else None}
        if self.running:
            used, kind = self.memory
            out.update({"processes": len(self.pids), "pids": self.pids, "memory_bytes": used, "memory_kind": kind,
                        "dashboard": self.dashboard})
        return out

    def describe(self) -> str:
        """One line for people: where it is, how many processes, how much memory."""
        if not self.running:
            return "no Ray head of this state dir is running"
        used, kind = self.memory
        return (f"Ray head of this state dir at {self.address or '(address unknown)'}: {len(self.pids)} processes, "
                f"{used / 2**20:.0f} MiB ({kind})")


def find(state_dir: Path, procs: dict[int, Proc] | None = None, sessions: Collection[int] = ()) -> Head:
    """This state dir's head: its record (if any) and its live processes (also those left in
    `sessions`, the head's sessions seen earlier)."""
    rec = load_record(state_dir) or {}
    temp = Path(rec["temp_dir"]) if isinstance(rec.get("temp_dir"), str) else None
    address = rec.get("address")
    procs = processes() if procs is None else procs
    known = {*sessions, *([rec["session"]] if isinstance(rec.get("session"), int) else [])}
    # no temp dir recorded: only the recorded sessions (an entry no process carries)
    pids, found = marked(procs, f"{HEAD_ENV}={temp or '(none)'}".encode(), known)
    return Head(state_dir, temp, address, rec.get("dashboard"), sorted(pids), found)


def _wait_gone(pids: set[int], until: float) -> set[int]:
    alive = set(pids)
    while alive and time.monotonic() < until:
        time.sleep(0.05)
        alive = {pid for pid in alive if _proc(pid) is not None}
    return alive


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def terminate(find_pids: Callable[[], set[int]], grace: float = 2.0, timeout: float = 10.0) -> list[int]:
    """SIGTERM what `find_pids()` returns, SIGKILL what is left after `grace` (Ray's GCS server and
    autoscaler monitor never leave on SIGTERM; the rest are gone in a tenth of a second), and look again
    until nothing is (a dying process tree re-parents, and even starts processes) or `timeout`
    passes. Returns the survivors (empty: all gone)."""
    deadline = time.monotonic() + timeout
    first = find_pids()
    _signal(first, signal.SIGTERM)
    _wait_gone(first, time.monotonic() + grace)
    while True:
        left = find_pids()
        if not left or time.monotonic() >= deadline:
            return sorted(left)
        _signal(left, signal.SIGKILL)
        _wait_gone(left, min(deadline, time.monotonic() + 2))


def stop(state_dir: Path, grace: float = 2.0, timeout: float = 10.0) -> tuple[Head, list[int]]:
    """Stop every process of this state dir's head (see terminate), then remove its record and its
    private temp dir (only if ours: see unsafe). Returns the head as it was and the pids that
    survived. Never `ray stop`, which kills every Ray head of the machine."""
    head = find(state_dir)
    left = terminate(lambda: set(find(state_dir, sessions=head.sessions).pids), grace, timeout)
    if not left:
        record_file(state_dir).unlink(missing_ok=True)
        if head.temp_dir is not None:
            remove_temp_dir(head.temp_dir)
    return head, left


def daemon_pid(pidfile: Path) -> int | None:
    """The running daemon's pid: the pidfile counts only while its lock is held."""
    import fcntl

    try:
        fd = os.open(pidfile, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(os.read(fd, 32).decode().strip() or 0) or None
        except ValueError:
            return None
    finally:
        os.close(fd)
    return None

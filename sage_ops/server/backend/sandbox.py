"""Single-user mode's wall: a job that runs as the daemon's own user does not see the daemon's files.

Where the OS cannot keep a job out (same uid), bubblewrap can: the job runs in a mount namespace
where the daemon's state dir, config dir (keys, tokens), log storage and Ray head temp dir are
empty tmpfs (a private file elsewhere: /dev/null), and in a PID namespace of its own (it cannot see
or signal the daemon or other jobs, nor read their /proc/PID/environ). The rest of the filesystem
is the same. A pipeline (a Ray driver) keeps the host's PIDs, the Ray temp dir and the Ray token:
it drives the cluster, as documented.

No `--new-session`: the job is already a session leader (the runner starts bwrap with setsid, so
it has no terminal to inject into), and its processes stay in bwrap's process group, so cancel's
SIGTERM to the group reaches them and the grace period means something; the cgroup (containment)
holds whatever leaves the group, and the PID namespace dies with its first process.

Imported on Ray workers: standard library only.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE = ["--bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc", "--die-with-parent"]
OWN_PIDS = "--unshare-pid"


def installed() -> bool:
    return shutil.which("bwrap", path=SYSTEM_PATH) is not None


@functools.cache
def bwrap() -> str | None:
    """bubblewrap's path, if it works here (a container may forbid the namespaces it needs):
    probed once per process."""
    tool = shutil.which("bwrap", path=SYSTEM_PATH)
    if tool is None:
        return None
    try:
        ok = subprocess.run([tool, *BASE, OWN_PIDS, "--", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return tool if ok else None


def _inside(path: str, hide: list[str]) -> bool:
    return any(path == h or path.startswith(h.rstrip("/") + "/") for h in hide)


def wrap(argv: list[str], hide: list[str], keep: list[str], own_pids: bool = True) -> list[str]:
    """`argv` run with each existing path of `hide` emptied, and `keep` (what the worker made for
    this job: its scratch dir, a pipeline's Ray token) reachable even inside one of them; in a PID
    namespace of its own if `own_pids` (not a Ray driver: Ray finds its node's raylet by pid).

    Only a kept path inside a hidden one is bound back: bubblewrap binds from the real tree, so
    binding an ancestor (a working dir of $HOME) would bring the hidden dirs back with it. The job's
    working dir is never kept: one inside a hidden dir is the job asking to see it.
    Without a working bubblewrap: `argv` as it is."""
    tool = bwrap()
    if tool is None or not hide:
        return argv
    out = [tool, *BASE, *([OWN_PIDS] if own_pids else [])]
    for path in hide:
        if os.path.isdir(path):
            out += ["--tmpfs", path]
        elif os.path.exists(path):
            out += ["--ro-bind", "/dev/null", path]
    for path in keep:
        if not path or not _inside(os.path.realpath(path), hide):
            continue
        if os.path.isdir(path):
            out += ["--bind", path, path]
        elif os.path.isfile(path):  # a file the job reads (a pipeline's Ray token)
            out += ["--ro-bind", path, path]
    return [*out, "--", *argv]

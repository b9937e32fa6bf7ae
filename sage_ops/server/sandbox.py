"""Single-user mode's wall: a job that runs as the daemon's own user does not see the daemon's files.

Where the OS cannot keep a job out (same uid), bubblewrap can: the job runs in a mount namespace
where the daemon's state dir, config dir (keys, tokens), log storage and Ray head temp dir are
empty tmpfs, and in a PID namespace of its own (it cannot see or signal the daemon or other jobs).
The rest of the filesystem is the same. Its scratch and working dirs stay reachable.

Imported on Ray workers: standard library only.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE = ["--bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc", "--unshare-pid", "--die-with-parent"]


@functools.cache
def bwrap() -> str | None:
    """bubblewrap's path, if it works here (a container may forbid the namespaces it needs)."""
    tool = shutil.which("bwrap", path=SYSTEM_PATH)
    if tool is None:
        return None
    try:
        ok = subprocess.run([tool, *BASE, "--", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return tool if ok else None


def wrap(argv: list[str], hide: list[str], keep: list[str]) -> list[str]:
    """`argv` run with each existing path of `hide` emptied, and `keep` (inside one of them or
    not) reachable as it is. Without a working bubblewrap: `argv` as it is."""
    tool = bwrap()
    if tool is None or not hide:
        return argv
    out = [tool, *BASE]
    for path in hide:
        if os.path.isdir(path):
            out += ["--tmpfs", path]
        elif os.path.exists(path):
            out += ["--ro-bind", "/dev/null", path]
    for path in keep:
        if path and os.path.isdir(path):
            out += ["--bind", path, path]
        elif path and os.path.isfile(path):  # a file the job reads (a pipeline's Ray token)
            out += ["--ro-bind", path, path]
    return [*out, "--", *argv]

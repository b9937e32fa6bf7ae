"""Starting a job as its owner's Unix user on a node (run_as.py decides who that is).

The Ray worker (root on a multi-user cluster) makes the job's scratch directory the user's, then
starts the job through util-linux `setpriv`, which drops to the user's uid, gid and groups just
before exec: the fork stays a vfork (a Python `preexec_fn` or Popen's `user=` would cost 3-10x).

Imported on Ray workers: standard library only.
"""

from __future__ import annotations

import os
import pwd
import shutil

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # never the worker's own PATH


def resolve(name: str) -> pwd.struct_passwd:
    """The user `name` (or `#UID`) on this node, or LookupError saying why it cannot be run as."""
    if os.geteuid() != 0:
        raise LookupError(f"cannot run as {name}: this node's Ray worker is not root, so it cannot switch users")
    try:
        entry = pwd.getpwuid(int(name[1:])) if name.startswith("#") else pwd.getpwnam(name)
    except (KeyError, ValueError):
        if name.startswith("#") and name[1:].isdigit():  # a uid with no passwd entry: run with no name
            uid = int(name[1:])
            return pwd.struct_passwd((name, "x", uid, uid, "", "/", "/bin/sh"))
        raise LookupError(f"cannot run as {name}: no such user on this node") from None
    if entry.pw_uid == 0:
        raise LookupError(f"cannot run as {name}: jobs never run as root")
    return entry


def setpriv(entry: pwd.struct_passwd) -> list[str]:
    """The argv prefix that runs a command as `entry`."""
    tool = shutil.which("setpriv", path=SYSTEM_PATH)
    if tool is None:
        raise LookupError("cannot switch users: setpriv (util-linux) is not installed on this node")
    groups = "--init-groups" if not entry.pw_name.startswith("#") else "--clear-groups"
    return [tool, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", groups, "--"]


def hand_over(scratch: str, entry: pwd.struct_passwd) -> None:
    """The scratch directory and what the worker wrote there (the script, a shipped working
    directory unpacked) become the user's."""
    for folder, dirs, files in os.walk(scratch):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    os.chown(scratch, entry.pw_uid, entry.pw_gid)
    os.chmod(scratch, 0o700)

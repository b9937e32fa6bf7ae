"""Small Python programs `nodes add` and `nodes remove` run on a node over SSH, with whatever
Python the node has (standard library only): find and stop a node's Ray processes and remove its
credentials, make its private Ray temp dir, check its interpreter."""

from __future__ import annotations

import inspect

from .. import rayhead
from . import credentials
from .base import NODE_ENV

# rayhead (standard library only) as a module on the node, whatever is installed there: the node's
# Ray temp dir is made and judged by the very functions that make and judge the head's
_RAYHEAD = f"""
import sys, types
rayhead = types.ModuleType("sage_ops_rayhead")
sys.modules[rayhead.__name__] = rayhead
exec(compile({inspect.getsource(rayhead)!r}, "sage_ops/rayhead.py", "exec"), rayhead.__dict__)
"""

PROCS = _RAYHEAD + (r"""
import os, shutil, signal, sys, time
from pathlib import Path
name, action, timeout, files = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
want, me, uid = ("%s=%s" % (ENV, name)).encode(), os.getpid(), os.getuid()

def find():  # {pid: is the raylet}
    found = {}
    for p in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != me):
        try:
            if os.stat("/proc/" + p).st_uid == uid:
                with open("/proc/%s/environ" % p, "rb") as f:
                    if want in f.read().split(b"\0"):
                        with open("/proc/%s/cmdline" % p, "rb") as c:
                            found[int(p)] = b"raylet" in c.read().split(b"\0")[0]
        except OSError:
            pass
    return found

def kill(pids, sig, until):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    while time.time() < until and set(pids) & set(find()):
        time.sleep(0.1)

seen = find()
if action == "stop":
    start = time.time()
    kill([p for p, raylet in seen.items() if raylet], signal.SIGTERM, start + timeout / 2)
    for sig, until in ((signal.SIGTERM, start + timeout), (signal.SIGKILL, start + timeout + 5)):
        left = find()
        seen.update(left)
        kill(list(left), sig, until)
    for path in files:  # the node's credentials, and its Ray temp dir (named in a record)
        if os.path.basename(path).startswith(RECORD) and os.path.isfile(path) and not os.path.islink(path):
            with open(path) as f:
                rayhead.remove_temp_dir(Path(f.read().strip()))  # only if ours: rayhead.unsafe
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
print(len(seen))
""".replace("ENV", repr(NODE_ENV)).replace("RECORD", repr(credentials.RAY_TEMP_RECORD)))
# A private temp dir for the node's Ray, made on the node as the head's is (its path on stdout):
# without --temp-dir a node's Ray makes the head's temp-dir path (or /tmp/ray) there, a name known
# in advance, world-readable, for any local user to plant links in
NEW_TEMP = _RAYHEAD + "print(rayhead.new_temp_dir())"
CHECK_PY = """import sys, os
print("%d.%d.%d" % sys.version_info[:3]); print(os.path.exists(os.path.join(sys.argv[1], "bin", "python")))
try:
    import venv, ensurepip; print("ok")
except Exception as e:
    print(e)"""

"""The environment a job starts from: an allow-list, never the daemon's (or its Ray worker's).

A Ray worker inherits the environment of whoever started the daemon and its head: the Ray token
path, the daemon's configuration (`SAGE_OPS_*`), the starter's session (`XDG_*`, `SSH_AUTH_SOCK`).
A job is untrusted code, so it gets only what a login of its run-as user would have, plus its own
spec env, its opened secrets and the documented `SAGE_OPS_*` variables. Only a job that uses Ray
itself (a pipeline) gets the Ray connection (`RAY_*`): Ray does not isolate its drivers.

Imported on Ray workers: standard library only.
"""

from __future__ import annotations

import pwd
from collections.abc import Mapping

# Passed through from the worker's environment as they are: how programs behave, no credentials.
PASSED = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR")
PASSED_PREFIXES = ("LC_",)
# Marks that are not secrets, kept so the sweeps that find leftover processes by their environment
# find a job's processes too: the Ray head's temp dir (rayhead.HEAD_ENV, `daemon stop`), a node's
# name (nodes.base.NODE_ENV, `nodes remove`), a test session or benchmark run (tests, benchmarks).
MARKS = ("SAGE_OPS_RAY_HEAD", "SAGE_OPS_NODE", "SGO_TEST_SESSION", "SGO_BENCH_RUN")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def login(uid: int) -> dict[str, str]:
    """HOME, USER, LOGNAME and SHELL of the user the job runs as (as a login would set them)."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:  # a uid without a passwd entry (a container): no home to offer
        return {"HOME": "/", "USER": str(uid), "LOGNAME": str(uid), "SHELL": "/bin/sh"}
    return {"HOME": entry.pw_dir or "/", "USER": entry.pw_name, "LOGNAME": entry.pw_name,
            "SHELL": entry.pw_shell or "/bin/sh"}


def job_environment(base: Mapping[str, str], uid: int, own: Mapping[str, str], *, ray: bool = False) -> dict[str, str]:
    """The job's environment: the allow-listed part of `base` (the worker's environment), the
    run-as user's login variables, then `own` (spec env, opened secrets, the documented
    SAGE_OPS_* variables; they win). `ray`: the job drives Ray itself and gets base's RAY_*."""
    env = {k: v for k, v in base.items() if k in PASSED or k in MARKS or k.startswith(PASSED_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(login(uid))
    if ray:
        env.update({k: v for k, v in base.items() if k.startswith("RAY_")})
    env.update(own)
    return env

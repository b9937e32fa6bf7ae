"""Helpers for code running inside a sage-ops job."""

from __future__ import annotations

import json
import os
from typing import Any


def set_result(obj: Any) -> None:
    """Record the job's result (JSON-serialisable); `sage-ops result JOB` prints it."""
    path = os.environ.get("SAGE_OPS_RESULT_FILE")
    if not path:
        raise RuntimeError("set_result() works only inside a sage-ops job ($SAGE_OPS_RESULT_FILE is unset)")
    data = json.dumps(obj).encode()
    tmp = f"{path}.tmp"
    # a link planted at the temporary name is not followed (written through); the daemon reads
    # only a regular file of at most storage.max_result_bytes (4 MiB by default)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def job_id() -> str | None:
    return os.environ.get("SAGE_OPS_JOB_ID")


def progress(fraction: float, message: str = "") -> None:
    """Report progress as a log line the daemon keeps (0.0 .. 1.0)."""
    print(f"[sage-ops progress {max(0.0, min(1.0, fraction)):.3f}] {message}", flush=True)

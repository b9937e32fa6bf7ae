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
    data = json.dumps(obj)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
    os.replace(tmp, path)


def job_id() -> str | None:
    return os.environ.get("SAGE_OPS_JOB_ID")


def progress(fraction: float, message: str = "") -> None:
    """Report progress as a log line the daemon keeps (0.0 .. 1.0)."""
    print(f"[sage-ops progress {max(0.0, min(1.0, fraction)):.3f}] {message}", flush=True)

"""What the same short jobs cost without sage-ops, measured in the same run as its own figures:

- the floor: `xargs -P CPUS` running the command N times, no manager at all;
- bare Ray tasks on the daemon's own Ray head: one task per job (num_cpus=1) that runs the
  command in a subprocess, all submitted at once from a driver of their own, after a warm-up;
- Ray's Job Submission API (submit_throughput.ray_jobs), a few jobs in flight.

Each Ray client runs in a process of its own: Ray reads its auth mode when first imported, and
another scenario of the same run may have imported it already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONNECT = r"""
import json, os, sys, time
from pathlib import Path
from sage_ops.server.backend.ray_backend import LocalHead
os.environ.update(LocalHead(Path(sys.argv[2])).env())  # the head's token and settings, before Ray is imported
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False, _node_ip_address="127.0.0.1")
"""

DRIVER = r"""
import subprocess
cmd, n = json.loads(sys.argv[3]), int(sys.argv[4])

@ray.remote(num_cpus=1, max_retries=0)
def job(cmd):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True).returncode

ray.get([job.remote(cmd) for _ in range(min(n, 300))])  # the worker pool up, as sage-ops is warmed
t0 = time.perf_counter()
codes = ray.get([job.remote(cmd) for _ in range(n)])
print(json.dumps({"rate": n / (time.perf_counter() - t0), "failed": sum(1 for c in codes if c)}))
"""


def on_head(script: str, address: str, state: Path, *args: str, what: str) -> Any:
    """The JSON `script` prints last, run after CONNECT as a Ray driver of its own on the head at
    `address` (the head of the daemon whose state dir is `state`); None if it failed (said so)."""
    out = subprocess.run([sys.executable, "-c", CONNECT + script, address, str(state), *args],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        print(f"  {what}: failed: {out.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


RAY_JOBS = r"""
import os, sys
from pathlib import Path
from sage_ops.server.backend.ray_backend import LocalHead
os.environ.update(LocalHead(Path(sys.argv[4])).env())
sys.path.insert(0, sys.argv[5])
from submit_throughput import ray_jobs
print(ray_jobs(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
"""


def ray_jobs(n: int, dashboard: str, window: int, state: Path) -> float:
    """Jobs/s of `true` jobs through Ray's Job Submission API (`window` in flight)."""
    out = subprocess.run([sys.executable, "-c", RAY_JOBS, str(n), dashboard, str(window), str(state),
                          str(Path(__file__).resolve().parent)], text=True, stdout=subprocess.PIPE, timeout=7200)
    lines = out.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))  # its own report line
    return float(lines[-1]) if out.returncode == 0 and lines else 0.0


def xargs_floor(cmd: list[str], n: int, parallel: int) -> float:
    """Jobs/s of `xargs -P parallel` running `cmd` n times (each gets one number as an extra
    argument, which `true` and `python -c pass` ignore)."""
    lines = "".join(f"{i}\n" for i in range(n))
    t0 = time.perf_counter()
    subprocess.run(["xargs", "-P", str(parallel), "-n", "1", *cmd], input=lines, text=True, check=True,
                   stdout=subprocess.DEVNULL)
    rate = n / (time.perf_counter() - t0)
    print(f"  xargs -P {parallel} {' '.join(cmd):<16}: {rate:8.1f} jobs/s  (the floor: no manager)")
    return rate


def bare_ray_tasks(cmd: list[str], n: int, address: str, state: Path) -> float:
    """Jobs/s of one Ray task per job running `cmd` in a subprocess, on the head at `address`
    (the head of the daemon whose state dir is `state`: its token and settings)."""
    result = on_head(DRIVER, address, state, json.dumps(cmd), str(n), what="bare Ray tasks")
    if result is None:
        return 0.0
    print(f"  bare Ray tasks {' '.join(cmd):<14}: {result['rate']:8.1f} jobs/s  ({n} tasks, {result['failed']} failed)")
    return float(result["rate"])

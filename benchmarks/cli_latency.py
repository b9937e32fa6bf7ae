"""CLI latency: the wall time of one `sage-ops` command as a shell runs it (a new process each time),
against a running private daemon, side by side with Ray's `ray job list` against the same Ray head.

    python -m benchmarks cli --cli-runs 15
    python benchmarks/cli_latency.py --cli-runs 15

Printed: the median of `--cli-runs` runs of `--version`, `jobs`, `status ID`, `submit -q -- true`,
`logs ID` and TAB completion of a job id (click's `_SAGE_OPS_COMPLETE=bash_complete`), `ray job
list` (and `ray --version`), and the rate of a shell loop of 20 `submit -q`. Goals (issue 20, a
2-core machine) are printed beside the figures; nothing is asserted. Everything started is stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Bench, table  # noqa: E402 - the shared private-daemon harness

GOALS = {"version_ms": "<= 80", "jobs_ms": "<= 120", "status_ms": "<= 120", "submit_ms": "<= 120",
         "complete_job_id_ms": "<= 80"}
LOOP = 20  # `submit -q` calls in the shell loop


def sage_ops() -> list[str]:
    """The installed entry point next to this Python (what a user's shell runs), else `-m sage_ops`."""
    exe = Path(sys.executable).parent / "sage-ops"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sage_ops"]


def median_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of `runs` runs (one warm-up first: the page cache, not the first run, is measured)."""
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if i:
            times.append(time.perf_counter() - t)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
    return round(statistics.median(times) * 1000, 1)


def shell_loop(exe: list[str], env: dict[str, str]) -> float:
    """Jobs per second of `for i in 1..20; do sage-ops submit -q -- true; done` in bash."""
    loop = f"for i in $(seq {LOOP}); do {' '.join(exe)} submit -q -- true >/dev/null || exit 1; done"
    t = time.perf_counter()
    subprocess.run(["bash", "-c", loop], env=env, check=True, timeout=600)
    return round(LOOP / (time.perf_counter() - t), 1)


def ray_side(health: dict[str, Any], bench: Bench, runs: int) -> dict[str, Any]:
    """`ray job list` against the same head's dashboard (Ray's job API lives there); without a
    dashboard, only `ray --version`, and the reason."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray is None:
        return {"ray": "not installed"}
    env = {k: v for k, v in bench.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(bench.state / "ray" / "auth_token"),
               PYTHONPYCACHEPREFIX=str(bench.home / "pycache"))
    out: dict[str, Any] = {"ray_version_ms": median_ms([ray, "--version"], env, runs)}
    dashboard = health["ray"].get("dashboard")
    if dashboard:
        out["ray_job_list_ms"] = median_ms([ray, "job", "list", "--address", dashboard], env, runs)
    else:
        out["ray_job_list"] = "skipped: the daemon's Ray head has no dashboard (Ray's job API needs it)"
    return out


def run(args: Any) -> dict[str, Any]:
    runs = getattr(args, "cli_runs", 15)
    bench = Bench()
    health = bench.start()
    exe = sage_ops()
    # as installed: bytecode cached (pip compiles a package it installs; an editable checkout under
    # PYTHONDONTWRITEBYTECODE would be compiled anew on every run), here in the private home
    env = {k: v for k, v in bench.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(SAGE_OPS_ADDRESS=bench.address, PYTHONPYCACHEPREFIX=str(bench.home / "pycache"))
    figures: dict[str, Any] = {"runs": runs}
    try:
        job = bench.cli("submit", "-q", "--name", "hello", "--", "echo", "hello").strip()
        bench.cli("wait", job)
        # a job holding every CPU: the jobs submitted below queue instead of starting Ray workers
        # that would compete with the commands measured (the CLI is measured, not Ray)
        cpus = health["ray"]["resources"].get("CPU", 1)
        bench.cli("submit", "-q", "--name", "blocker", "--cpu", f"{cpus:g}", "--", "sleep", "3600")
        complete = {**env, "_SAGE_OPS_COMPLETE": "bash_complete", "COMP_WORDS": "sage-ops logs ", "COMP_CWORD": "2"}
        cases = {"version_ms": (["--version"], env), "jobs_ms": (["jobs"], env), "status_ms": (["status", job], env),
                 "logs_ms": (["logs", job], env), "complete_job_id_ms": ([], complete),
                 "submit_ms": (["submit", "-q", "--", "true"], env)}
        for key, (argv, case_env) in cases.items():
            figures[key] = median_ms([*exe, *argv], case_env, runs)
            print(f"  cli: {key:20s} {figures[key]:7.1f} ms   goal {GOALS.get(key) or '-'}", flush=True)
        figures["shell_loop_submit_per_s"] = shell_loop(exe, env)
        print(f"  cli: {LOOP} x `submit -q` in a shell loop: {figures['shell_loop_submit_per_s']} jobs/s", flush=True)
        for key, value in ray_side(health, bench, runs).items():
            figures[key] = value
            print(f"  ray: {key:20s} {value}{' ms' if isinstance(value, float) else ''}", flush=True)
    finally:
        bench.stop()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli-runs", type=int, default=15, help="runs per command (the median is printed)")
    figures = run(ap.parse_args())
    print()
    print(table({"cli": figures}, GOALS))


if __name__ == "__main__":
    os.environ.pop("SAGE_OPS_ADDRESS", None)
    main()

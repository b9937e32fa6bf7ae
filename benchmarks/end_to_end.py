"""End to end: N `true` jobs and N `python -c pass` jobs flat, N `true` jobs as a DAG, and
submit->RUNNING latency on an idle cluster; then the same commands without sage-ops in the same
run (anchors.py): `xargs -P CPUS` (the floor), bare Ray tasks on the same head, and Ray's own Job
Submission API (`--ray-jobs-n` of them: about one a second). The daemon is warmed first with a few
hundred jobs (Ray's worker pool and the executors up), as the Ray anchor is.

As root (a multi-user daemon), the flat and DAG batches also run as a tenant whose jobs run as a
Unix user of their own (made here with useradd, removed after), alternating with the daemon
owner's batches: what the trust boundary's user switch costs, measured side by side. Every job
runs in a cgroup of its own either way (or under the subreaper: `health` says which).

    python -m benchmarks e2e -n 2000 [--no-ray-jobs] [--ray-jobs-n 100]
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

from anchors import bare_ray_tasks, ray_jobs, xargs_floor
from common import TRUE, Bench, bench_user, ms, rss_mb
from dag import random_dag
from dag import run as timed_batch
from submit_throughput import idle_latency

from sage_ops.client import AsyncJobManagerClient

PYTHON = [shutil.which("python3", path="/usr/bin:/bin") or sys.executable, "-c", "pass"]
PY_PASS: dict[str, Any] = {"command": PYTHON, "resources": {"cpu": 1}}
WARM = 300


async def run(args: Any) -> dict[str, Any]:
    bench = Bench()
    health = bench.start()
    figures: dict[str, Any] = {"n": args.n, "cpus": health["ray"]["resources"].get("CPU", 0)}
    try:
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:
            await timed_batch(client, [TRUE] * WARM, "warm")
            flat = await timed_batch(client, [TRUE] * args.n, "flat")
            py = await timed_batch(client, [PY_PASS] * args.n, "py")
            dag = await timed_batch(client, random_dag(args.n, max(1, args.n // 100), 1), "dag")
            figures.update({"flat_per_s": round(flat["rate"], 1), "python_flat_per_s": round(py["rate"], 1),
                            "dag_per_s": round(dag["rate"], 1),
                            "scheduler_us_per_job": round(dag["scheduler_s_per_job"] * 1e6, 1)})
            figures.update(await run_as_cost(bench, client, args.n))
            lat = await idle_latency(client, args.latency_samples)
            figures["submit_to_running_p50_ms"], figures["submit_to_running_p99_ms"] = ms(lat, 50), ms(lat, 99)
            figures["daemon_rss_mb"] = rss_mb(health["pid"])
        cpus = int(figures["cpus"]) or 1
        for key, cmd in (("", ["true"]), ("python_", PYTHON)):
            figures[f"{key}xargs_floor_per_s"] = round(xargs_floor(cmd, args.n, cpus), 1)
            figures[f"{key}bare_ray_tasks_per_s"] = round(bare_ray_tasks(cmd, args.n, health["ray"]["address"],
                                                                         bench.state), 1)
        if not args.no_ray_jobs:
            figures["ray_jobs_per_s"] = round(ray_jobs(args.ray_jobs_n, health["ray"]["dashboard"], args.ray_window,
                                                       bench.state), 2)
            if figures["ray_jobs_per_s"]:
                figures["ratio_vs_ray_jobs"] = round(figures["flat_per_s"] / figures["ray_jobs_per_s"], 1)
                print(f"  e2e: sage-ops / Ray Jobs = {figures['ratio_vs_ray_jobs']:.0f}x")
    finally:
        bench.stop()
    return figures


async def run_as_cost(bench: Bench, owner: AsyncJobManagerClient, n: int) -> dict[str, Any]:
    """Flat and DAG rates of jobs run as the daemon's user and as a tenant's run_as user, two rounds
    each, alternating (the better of each is kept: noise on 2 shared cores only ever slows)."""
    with bench_user() as user:
        if user is None:
            print("  run-as: not measured (needs root, useradd and setpriv: a multi-user daemon)")
            return {}
        bench.cli("tenant", "create", "bench", "--run-as", user)
        token = bench.cli("token", "create", "--tenant", "bench", "--name", "bench").strip().splitlines()[-1]
        rates: dict[str, list[float]] = {}
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}, token=token) as tenant:
            for rnd in range(2):
                for who, client in (("owner", owner), ("run_as", tenant)):
                    flat = await timed_batch(client, [TRUE] * n, f"{who[:5]}{rnd}")
                    dag = await timed_batch(client, random_dag(n, max(1, n // 100), 1), f"{who[:3]}D{rnd}")
                    rates.setdefault(f"{who}_flat", []).append(flat["rate"])
                    rates.setdefault(f"{who}_dag", []).append(dag["rate"])
    out = {f"{k}_per_s": round(max(v), 1) for k, v in rates.items()}
    for kind in ("flat", "dag"):
        cost = 1 - out[f"run_as_{kind}_per_s"] / out[f"owner_{kind}_per_s"]
        out[f"run_as_{kind}_cost_pct"] = round(100 * cost, 1)
        print(f"  run-as {kind}: {out[f'owner_{kind}_per_s']:.1f} jobs/s as the daemon's user, "
              f"{out[f'run_as_{kind}_per_s']:.1f} as a tenant's own user: {100 * cost:+.1f}% (aim: <= 10%)")
    return out

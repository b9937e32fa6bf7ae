"""End to end: N `true` jobs flat and as a DAG, submit->RUNNING latency on an idle cluster, and the
same N jobs through Ray's own Job Submission API in the same run (the ratio is printed).

    python -m benchmarks e2e -n 1000 [--no-ray-jobs]
"""

from __future__ import annotations

import os
from typing import Any

from common import TRUE, Bench, ms, rss_mb
from dag import random_dag
from dag import run as timed_batch
from submit_throughput import idle_latency, ray_jobs

from sage_ops.client import AsyncJobManagerClient


async def run(args: Any) -> dict[str, Any]:
    bench = Bench()
    health = bench.start()
    figures: dict[str, Any] = {"n": args.n, "cpus": health["ray"]["resources"].get("CPU", 0)}
    try:
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:
            flat = await timed_batch(client, [TRUE] * args.n, "flat")
            dag = await timed_batch(client, random_dag(args.n, max(1, args.n // 100), 1), "dag")
            figures.update({"flat_per_s": round(flat["rate"], 1), "dag_per_s": round(dag["rate"], 1),
                            "scheduler_us_per_job": round(dag["scheduler_s_per_job"] * 1e6, 1)})
            lat = await idle_latency(client, args.latency_samples)
            figures["submit_to_running_p50_ms"], figures["submit_to_running_p99_ms"] = ms(lat, 50), ms(lat, 99)
            figures["daemon_rss_mb"] = rss_mb(health["pid"])
        if not args.no_ray_jobs:
            token = bench.state / "ray" / "auth_token"
            os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
            figures["ray_jobs_per_s"] = round(ray_jobs(args.n, health["ray"]["dashboard"], args.ray_window), 2)
            figures["ratio_vs_ray_jobs"] = round(figures["flat_per_s"] / figures["ray_jobs_per_s"], 1)
            print(f"  e2e: sage-ops / Ray Jobs = {figures['ratio_vs_ray_jobs']:.0f}x")
    finally:
        bench.stop()
    return figures

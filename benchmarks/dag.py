"""A random DAG of `true` jobs against the same number of independent ones, in the same run.

    python benchmarks/dag.py                 # 10,000 jobs, width 100 (100 layers)
    python benchmarks/dag.py -n 2000 --width 50

Each layer holds `width` jobs; each job depends on 1-3 random jobs of the layer before. Both sets
are submitted in one batch each to a private daemon (its own HOME, SQLite and Ray head). Printed:
total time and rate of each, the end-to-end cost the dependencies add per job, and the
scheduler's own time per job (choosing what runs next plus dependency bookkeeping, as counted by
the daemon in /v1/stats). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Bench  # noqa: E402 - one private-daemon harness for every benchmark

from sage_ops.client import AsyncJobManagerClient  # noqa: E402

TRUE: dict[str, Any] = {"command": ["true"], "resources": {"cpu": 1}}


def random_dag(n: int, width: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        layer = i // width
        deps = []
        if layer:
            prev = range((layer - 1) * width, min(layer * width, n))
            deps = [f"d{j}" for j in rng.sample(prev, k=min(len(prev), rng.randint(1, 3)))]
        jobs.append({**TRUE, "name": f"d{i}", "dependencies": deps})
    return jobs


async def run(client: AsyncJobManagerClient, specs: list[dict[str, Any]], label: str) -> dict[str, float]:
    before = await client.get_statistics()
    t0 = time.perf_counter()
    refs = await client.submit_batch(specs)
    submitted = time.perf_counter() - t0
    await client.wait(refs[-1].id)
    while (await client.get_statistics()).active_jobs:
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - t0
    after = await client.get_statistics()
    ok = after.by_status["COMPLETED"] - before.by_status["COMPLETED"]
    sched = (after.scheduler_seconds - before.scheduler_seconds) / max(1, len(specs))
    print(f"  {label:<5}: {len(specs)} jobs in {elapsed:6.2f} s = {len(specs) / elapsed:7.1f} jobs/s  "
          f"(submit {submitted:.2f} s, {ok} COMPLETED; scheduler {sched * 1e6:.0f} us/job)")
    return {"elapsed": elapsed, "rate": len(specs) / elapsed, "scheduler_s_per_job": sched}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    bench = Bench(Path(tempfile.mkdtemp(prefix="sgo-dag-", dir="/tmp")))
    health = bench.start()
    print(f"sage-ops DAG benchmark: {args.n} `true` jobs, width {args.width}, "
          f"Ray {health['ray']['resources'].get('CPU', 0):g} CPUs")
    try:
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:
            flat = await run(client, [TRUE] * args.n, "flat")
            dag = await run(client, random_dag(args.n, args.width, args.seed), "dag")
        extra = (dag["elapsed"] - flat["elapsed"]) / args.n
        print(f"  dependencies add {extra * 1000:.2f} ms/job end to end; DAG rate = "
              f"{dag['rate'] / flat['rate']:.2f}x the flat rate; scheduler {dag['scheduler_s_per_job'] * 1e3:.3f} "
              f"ms/job (goal <= 1 ms)")
    finally:
        bench.stop()


if __name__ == "__main__":
    asyncio.run(main())

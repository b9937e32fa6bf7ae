"""A 100,000-task array against the same number of jobs in one batch, in the same run, on a private
daemon (its own HOME, SQLite and Ray head): what each costs at submit, in the store and in the
daemon's memory; then a smaller array run to the end against a flat batch of as many jobs.

    python benchmarks/arrays.py                    # 100,000 tasks submitted; 5,000 run
    python benchmarks/arrays.py -n 20000 --run 2000

Printed: submit time, job rows written and daemon RSS growth for the array and for the batch; for
the run, wall time, jobs/s and the scheduler's own time per task (as the daemon counts it in
/v1/stats). The array should cost a window of rows (jobmanager.array_window) and no memory to
speak of until its tasks run. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TRUE, Bench, rss_mb  # noqa: E402 - one private-daemon harness for every benchmark

from sage_ops.client import AsyncJobManagerClient  # noqa: E402


def rows(bench: Bench) -> int:
    with sqlite3.connect(bench.db) as db:
        return int(db.execute("SELECT count(*) FROM job").fetchone()[0])


async def submit_cost(client: AsyncJobManagerClient, bench: Bench, pid: int, n: int, array: bool) -> dict[str, float]:
    """Submit n tasks (one array, held so none runs) or n jobs (one batch, held): time, rows, memory."""
    before_rows, before_rss = rows(bench), rss_mb(pid)
    t0 = time.perf_counter()
    if array:
        view = await client.submit_job({**TRUE, "array": f"0-{n - 1}", "hold": True})
        ids = [view.id]
    else:
        refs = await client.submit_batch([{**TRUE, "hold": True}] * n)
        ids = [r.id for r in refs]
    elapsed = time.perf_counter() - t0
    figures = {"submit_s": elapsed, "rows": rows(bench) - before_rows, "rss_mb": rss_mb(pid) - before_rss}
    await client.cancel_jobs(ids)
    return figures


async def run(client: AsyncJobManagerClient, n: int, array: bool) -> dict[str, float]:
    before = await client.get_statistics()
    t0 = time.perf_counter()
    if array:
        job = await client.submit_job({**TRUE, "array": f"0-{n - 1}"})
        await client.wait(job.id, 3600)
    else:
        refs = await client.submit_batch([TRUE] * n)
        await client.wait(refs[-1].id, 3600)
    while (await client.get_statistics()).active_jobs:
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - t0
    after = await client.get_statistics()
    sched = (after.scheduler_seconds - before.scheduler_seconds) / n
    return {"elapsed": elapsed, "rate": n / elapsed, "sched_us": sched * 1e6,
            "ok": after.by_status["COMPLETED"] - before.by_status["COMPLETED"]}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="tasks (and jobs) submitted [100000]")
    ap.add_argument("--run", type=int, default=5_000, help="tasks (and jobs) run to the end [5000]")
    args = ap.parse_args()
    bench = Bench(Path(tempfile.mkdtemp(prefix="sgo-arrays-", dir="/tmp")))
    health = bench.start()
    pid = int(health["pid"])
    print(f"sage-ops array benchmark: {args.n:,} tasks submitted, {args.run:,} run; "
          f"Ray {health['ray']['resources'].get('CPU', 0):g} CPUs")
    try:
        async with AsyncJobManagerClient(bench.address, config={"timeout": 3600}) as client:
            arr = await submit_cost(client, bench, pid, args.n, array=True)
            flat = await submit_cost(client, bench, pid, args.n, array=False)
            print(f"  {'submit':<22} {'array':>12} {'batch':>12}")
            print(f"  {'time':<22} {arr['submit_s']:>10.3f} s {flat['submit_s']:>10.3f} s")
            print(f"  {'job rows written':<22} {arr['rows']:>12,} {flat['rows']:>12,}")
            print(f"  {'daemon RSS growth':<22} {arr['rss_mb']:>9.1f} MB {flat['rss_mb']:>9.1f} MB")
            ran_flat = await run(client, args.run, array=False)
            ran_arr = await run(client, args.run, array=True)
        for label, r in (("batch", ran_flat), ("array", ran_arr)):
            print(f"  run {label:<6}: {args.run:,} in {r['elapsed']:6.2f} s = {r['rate']:7.1f} jobs/s, "
                  f"{r['ok']:,} COMPLETED, scheduler {r['sched_us']:.0f} us/job (goal <= 1000)")
    finally:
        bench.stop()


if __name__ == "__main__":
    asyncio.run(main())

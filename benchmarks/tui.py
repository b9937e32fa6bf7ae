"""The TUI against a big store: start-up to the first painted jobs table with N jobs in the
daemon, key-press latency while quiet and while a burst of 10,000 job events arrives, screen
switches (jobs -> nodes -> jobs) while quiet and while a batch of 1,000 short jobs runs through
(its rows arriving live), and the TUI's memory.

    python benchmarks/tui.py               # 100,000 jobs, a burst of 10,000 cancellations
    python benchmarks/tui.py -n 20000 --burst 1000 --run 1000

Starts a private daemon (its own HOME and Ray head), fills it with N jobs that wait on one gate job
(so nothing runs), then runs the real app headless (`App.run_test`) in this process. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from submit_throughput import Bench, pct, rss_mb  # noqa: E402

from sage_ops.client import JobManagerClient  # noqa: E402


def fill(client: JobManagerClient, n: int) -> tuple[str, list[str]]:
    gate = client.submit_command(["sleep", "3600"], name="gate")
    ids: list[str] = []
    t = time.perf_counter()
    while len(ids) < n:
        size = min(20_000, n - len(ids))
        refs = client.submit_batch([{"command": ["true"], "name": f"job-{len(ids) + i}", "dependencies": [gate]}
                                    for i in range(size)])
        ids += [r.id for r in refs]
    print(f"store: {n:,} waiting jobs submitted in {time.perf_counter() - t:.1f} s")
    return gate, ids


async def key_latency(app: object, table: object) -> float:
    """Seconds from a key entering the app to the table's cursor having moved: the handling
    itself, not Pilot's wait for the app to go idle."""
    before = table.cursor_row  # type: ignore[attr-defined]
    key = "down" if before == 0 else "up"
    t = time.perf_counter()
    app.simulate_key(key)  # type: ignore[attr-defined]
    while table.cursor_row == before:  # type: ignore[attr-defined]
        await asyncio.sleep(0.0005)
    return time.perf_counter() - t


async def switch(app: Any, key: str) -> float:
    """Seconds from a key that changes screens to the new screen painted (its first refresh)."""
    before = app.screen
    painted = asyncio.Event()
    t = time.perf_counter()
    app.simulate_key(key)
    while app.screen is before:
        await asyncio.sleep(0.0005)
    app.screen.call_after_refresh(painted.set)
    await painted.wait()
    return time.perf_counter() - t


async def switches(app: Any, until: Callable[[], bool], limit: float = 120) -> list[float]:
    """Jobs -> nodes -> jobs, again and again (a key every 50 ms) until `until()` or `limit` s."""
    lat: list[float] = []
    t = time.perf_counter()
    while time.perf_counter() - t < limit:
        lat += [await switch(app, "n"), await switch(app, "escape")]
        await asyncio.sleep(0.05)
        if until():
            break
    return lat


def line(what: str, lat: list[float]) -> str:
    return (f"{what}: {len(lat)} switches, p50 {statistics.median(lat) * 1000:.0f} ms, "
            f"p99 {pct(lat, 99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")


async def measure(address: str, ids: list[str], burst_size: int, run: int) -> None:
    import os

    from sage_ops.tui.app import SageOpsApp
    from sage_ops.tui.widgets.job_table import JobTable

    before = rss_mb(os.getpid())
    t0 = time.perf_counter()
    app = SageOpsApp(address)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen_stack[0].query_one("#jobs", JobTable)
        while table.row_count == 0:
            await pilot.pause(0.01)
        first = time.perf_counter() - t0
        await pilot.pause(1.0)
        loaded = rss_mb(os.getpid())
        quiet = [await key_latency(app, table) for _ in range(20)]
        burst = ids[-burst_size:]  # the newest: the table's first pages
        t_burst = time.perf_counter()
        cancel = asyncio.create_task(app.client.cancel_jobs(burst))
        lat: list[float] = []
        seen = -1.0
        while time.perf_counter() - t_burst < 120:
            lat.append(await key_latency(app, table))
            await asyncio.sleep(0.02)  # a fast typist: 50 keys/s
            shown = sum(1 for row in range(min(table.row_count, 200))
                        if "CANCELLED" in str(table.get_row_at(row)))
            if cancel.done() and shown >= min(200, len(burst)) and app.last_seq is not None:
                seen = time.perf_counter() - t_burst
                break
        await cancel
        quiet_switch = [x for _ in range(10) for x in await switches(app, lambda: True)]
        await app.client.submit_batch([{"command": ["true"], "name": f"run-{i}"} for i in range(run)])
        t_run = time.perf_counter()

        async def drained() -> None:
            while await app.client.list_jobs(name="run-*", status=["SUBMITTED", "PENDING", "RUNNING"], limit=1):
                await asyncio.sleep(0.5)

        waiter = asyncio.create_task(drained())
        busy_switch = await switches(app, waiter.done)
        ran = time.perf_counter() - t_run
        waiter.cancel()
        peak = rss_mb(os.getpid())
        print(f"start-up to the first painted jobs table: {first * 1000:.0f} ms")
        print(f"key press handled (cursor moved), quiet: p50 {statistics.median(quiet) * 1000:.1f} ms, "
              f"max {max(quiet) * 1000:.1f} ms")
        print(f"burst of {len(burst):,} cancellations (one bulk request, {len(burst):,} events): shown in the table "
              f"after {seen:.2f} s; {len(lat)} key presses during it: p50 {statistics.median(lat) * 1000:.1f} ms, "
              f"p99 {pct(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")
        print(line("screen switch (jobs -> nodes -> jobs, painted), quiet", quiet_switch))
        print(line(f"screen switch while a batch of {run:,} short jobs runs (rows live)", busy_switch)
              + f" (the batch ran {ran:.1f} s)")
        print(f"TUI process memory: {loaded:.0f} MB RSS with the table loaded, {peak:.0f} MB after the burst "
              f"({before:.0f} MB before the app)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--burst", type=int, default=10_000, help="jobs cancelled in one request during the key presses")
    ap.add_argument("--run", type=int, default=1000, help="short jobs run through during the screen switches")
    args = ap.parse_args()
    bench = Bench(Path(tempfile.mkdtemp(prefix="sgo-bench-tui-", dir="/tmp")))
    bench.start()
    try:
        client = JobManagerClient(bench.address, config={"timeout": 600})
        gate, ids = fill(client, args.n)
        asyncio.run(measure(bench.address, ids, args.burst, args.run))
        client.cancel_jobs(status=["SUBMITTED", "PENDING", "RUNNING"])
    finally:
        bench.stop()


if __name__ == "__main__":
    main()

"""Retention at scale: a SQLite store of `--jobs` finished jobs (1,000,000 by default, ended over the
last 30 days, written straight into the tables as `benchmarks store` does, with a log file for
`--logs` of the oldest), the daemon on it, and a sweep of the jobs that ended more than `--age` ago
(15d: about half) run through `sage-ops gc`'s API, in the daemon's paced batches, while a client
reads the `jobs` first page without pause. Printed:

- rows deleted per second, batches, log bytes freed;
- the first page's p50/p99 latency during the sweep, next to the same read before it (the anchor)
  and after it;
- the database file before and after (SQLite reuses freed pages; the file does not shrink), the
  daemon's RSS before, at its peak during and after the sweep.

    python benchmarks/retention.py [--jobs 1000000] [--age 15d] [--logs 10000]

Figures are printed, never asserted. Everything it starts (the daemon, its Ray head) it stops.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Bench, ms, rss_mb  # noqa: E402
from store_scale import populate_sqlite, recount, timed  # noqa: E402

from sage_ops.units import parse_duration  # noqa: E402


def database_mb(bench: Bench) -> str:
    """The database file and its write-ahead log, in MB."""
    sizes = [p.stat().st_size / 2**20 if p.exists() else 0.0 for p in (bench.db, bench.db.with_name("sage-ops.db-wal"))]
    return f"{sizes[0]:,.1f} MB (+ WAL {sizes[1]:,.1f} MB)"


def write_logs(bench: Bench, n: int) -> int:
    """A small log file for each of the `n` oldest jobs, where the daemon keeps them; bytes written."""
    with sqlite3.connect(bench.db) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM job ORDER BY seq LIMIT ?", (n,))]
    root = bench.state / "storage" / "logs"
    line = b'{"timestamp":"2026-01-01T00:00:00Z","stream":"stdout","line":"x"}\n'
    for job_id in ids:
        path = root / job_id[:2] / f"{job_id}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(line * 20)
    return len(ids) * len(line) * 20


def during(client: Any, sweep: threading.Thread, pid: int) -> tuple[list[float], float]:
    """First-page latencies and the daemon's peak RSS while `sweep` runs."""
    lat, peak = [], 0.0
    while sweep.is_alive():
        t = time.perf_counter()
        client.list_jobs(limit=100)
        lat.append(time.perf_counter() - t)
        peak = max(peak, rss_mb(pid))
        time.sleep(0.01)
    return lat, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--age", default="15d", help="the sweep takes the jobs that ended longer ago than this")
    ap.add_argument("--logs", type=int, default=10_000, help="log files made for the oldest jobs")
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    from sage_ops.client import JobManagerClient

    bench = Bench()
    try:
        bench.start()  # the schema (and the Ray head)
        bench.stop_daemon()
        t = time.perf_counter()
        populate_sqlite(bench.db, args.jobs)
        recount(f"sqlite:///{bench.db}")
        log_bytes = write_logs(bench, args.logs)
        print(f"retention benchmark: {args.jobs:,} finished jobs (and {args.logs:,} logs, {log_bytes / 2**20:.1f} MiB) "
              f"written in {time.perf_counter() - t:.0f} s")
        size_before = database_mb(bench)
        pid = bench.start()["pid"]
        client = JobManagerClient(bench.address, config={"timeout": 120})
        first_page = lambda: client.list_jobs(limit=100)  # noqa: E731
        first_page()
        anchor = timed(first_page, args.samples)
        rss_before = rss_mb(pid)
        report: dict[str, Any] = {}

        def sweep() -> None:
            own = JobManagerClient(bench.address, config={"timeout": 3600})
            t0 = time.perf_counter()
            report["gc"] = own.gc(parse_duration(args.age))
            report["seconds"] = time.perf_counter() - t0
            own.close()

        runner = threading.Thread(target=sweep, name="gc")
        runner.start()
        lat, rss_peak = during(client, runner, pid)
        runner.join()
        after = timed(first_page, args.samples)
        gc, secs = report["gc"], report["seconds"]
        print(f"  sweep of jobs older than {args.age}: {gc.jobs:,} jobs ({gc.rows:,} rows) in {secs:.1f} s = "
              f"{gc.rows / secs:,.0f} rows/s, {gc.batches:,} batches, {gc.log_bytes / 2**20:.1f} MiB of logs freed")
        print(f"  jobs first page (100)   before p50 {ms(anchor, 50):7.2f} ms  p99 {ms(anchor, 99):7.2f} ms   (anchor)")
        print(f"                          during p50 {ms(lat, 50):7.2f} ms  p99 {ms(lat, 99):7.2f} ms   "
              f"({len(lat):,} reads)")
        print(f"                          after  p50 {ms(after, 50):7.2f} ms  p99 {ms(after, 99):7.2f} ms")
        print(f"  database file           before {size_before}  after {database_mb(bench)} "
              "(freed pages are reused, the file does not shrink)")
        print(f"  daemon RSS              before {rss_before:.0f} MB  peak during {rss_peak:.0f} MB  "
              f"after {rss_mb(pid):.0f} MB")
        client.close()
    finally:
        bench.stop()


if __name__ == "__main__":
    main()

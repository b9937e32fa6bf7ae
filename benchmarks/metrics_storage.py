"""How big the metrics series get: a week (or --days) of samples at the default interval, written
through the daemon's own Sampler.record (roll-ups and pruning included) into a fresh SQLite file.

    python benchmarks/metrics_storage.py                 # 7 days, 5 s, 4 nodes
    python benchmarks/metrics_storage.py --days 30 --nodes 16

Prints rows per level, the database size (after VACUUM), the time to write a sample and to read
the 1-hour and 7-day series. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sage_ops.config import MetricsConfig  # noqa: E402
from sage_ops.server.services import metrics  # noqa: E402
from sage_ops.server.storage.store import Store  # noqa: E402
from sage_ops.telemetry import MetricPoint, NodeUsage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--interval", type=float, default=MetricsConfig().interval)
    ap.add_argument("--nodes", type=int, default=4)
    args = ap.parse_args()
    cfg = MetricsConfig(interval=args.interval)
    tmp = Path(tempfile.mkdtemp(prefix="sgo-metrics-", dir="/tmp"))
    store = Store(f"sqlite:///{tmp / 'm.db'}")
    sampler = metrics.Rollups(cfg)
    start = time.time() - args.days * 86400
    start -= start % 600
    samples = int(args.days * 86400 / args.interval)
    per_sample: list[float] = []
    gib = 2**30
    nodes = {f"node-{i}": NodeUsage(cpu_used=i % 8, cpu_total=8, memory_used=4 * gib, memory_total=32 * gib)
             for i in range(args.nodes)}
    began = time.perf_counter()
    conn_cm = store.engine.begin()
    conn = conn_cm.__enter__()
    for i in range(samples):
        t = start + i * args.interval
        point = MetricPoint(time=datetime.fromtimestamp(t, timezone.utc), seconds=args.interval, submitted=i % 50,
                            started=i % 40, finished=i % 40, failed=i % 7 == 0, queue_depth=i % 100, running=8,
                            cpu_used=12, cpu_total=8 * args.nodes, memory_used=10 * gib,
                            memory_total=32 * gib * args.nodes, nodes=nodes)
        t0 = time.perf_counter()
        sampler.record(conn, point, t + args.interval)
        per_sample.append(time.perf_counter() - t0)
        if i % 10_000 == 9_999:  # commit in chunks, as the daemon commits each sample
            conn_cm.__exit__(None, None, None)
            conn_cm = store.engine.begin()
            conn = conn_cm.__enter__()
    conn_cm.__exit__(None, None, None)
    wrote = time.perf_counter() - began
    now = start + samples * args.interval
    with store.engine.connect() as c:
        rows = dict(c.exec_driver_sql("SELECT level, count(*) FROM metricsample GROUP BY level").all())
        reads = {}
        for window in (3600, 86400, 7 * 86400):
            t0 = time.perf_counter()
            points = len(metrics.series(c, cfg, window, now).points)
            reads[window] = (points, (time.perf_counter() - t0) * 1000)
        c.exec_driver_sql("VACUUM")
    store.close()
    size = (tmp / "m.db").stat().st_size
    print(f"{args.days:g} days at {args.interval:g} s with {args.nodes} nodes: {samples:,} samples written "
          f"in {wrote:.1f} s (record p50 {statistics.median(per_sample) * 1e3:.2f} ms)")
    for level, (step, keep) in enumerate(metrics.levels(cfg)):
        print(f"  level {level}: every {step:g} s, kept {keep / 3600:g} h -> {rows.get(level, 0):,} rows")
    print(f"  database: {size / 2**20:.2f} MiB ({size / max(1, sum(rows.values())):.0f} bytes/row)")
    for window, (points, ms) in reads.items():
        print(f"  series of {window / 3600:g} h: {points} points in {ms:.1f} ms")


if __name__ == "__main__":
    main()

"""The store at scale: a database holding `--jobs` finished jobs (1,000,000 by default), written
straight into the tables with their audit events and attempts, then the daemon started on it and
asked what the CLI and the TUI ask: the `jobs` first page (plain and filtered by status, name glob
and tenant), `status JOB` and `stats`, as p50/p99 latency through the Python client; plus daemon
start-up time, its RSS and the database's size; last, the rate of one batch submit into it (the
submit scenario's batch goes into an empty store).

    python -m benchmarks store --jobs 1000000 [--postgres]
"""

from __future__ import annotations

import asyncio
import gc
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import TRUE, Bench, ms, rss_mb
from submit_rates import batch

from sage_ops.schemas import JobSpec
from sage_ops.server.scheduling.admission import new_job_id

JOB_COLS = ["id", "seq", "name", "tenant", "status", "reason", "priority", "kind", "spec", "exit_code", "result",
            "attempts_made", "node", "created_at", "updated_at", "started_at", "ended_at", "not_before",
            "retry_base"]
EVENT_COLS = ["job_id", "time", "from_status", "to_status", "reason", "attempt"]
ATTEMPT_COLS = ["job_id", "number", "status", "node", "pid", "exit_code", "reason", "started_at", "ended_at"]
TENANTS = [f"team-{i}" for i in range(10)]


def finished_jobs(n: int, seed: int = 7) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]], tuple[Any, ...]]]:
    """(job row, its events, its attempt) of `n` jobs that ended over the last 30 days: 96%
    COMPLETED, 3% FAILED, 1% CANCELLED; half in one of ten tenants; names from 1,000 sweeps."""
    rng = random.Random(seed)
    spec = JobSpec.model_validate(TRUE).stored()  # as the daemon keeps it: the fields given (44 bytes, not 594)
    now = time.time()
    span = 30 * 86400
    for seq in range(1, n + 1):
        job_id = new_job_id(seq)  # as the daemon makes them: in seq order
        created = now - span + span * seq / n
        started, ended = created + rng.random(), created + 1 + rng.random() * 60
        r = rng.random()
        status, code = ("COMPLETED", 0) if r < 0.96 else ("FAILED", 1) if r < 0.99 else ("CANCELLED", None)
        reason = {"FAILED": "exit code 1", "CANCELLED": "cancelled"}.get(status)
        name = f"sweep-{seq % 1000}" if seq % 2 else f"train-{seq % 997}"
        tenant = TENANTS[seq % 10] if seq % 4 < 2 else None
        job = (job_id, seq, name, tenant, status, reason, 0, "command", spec, code, None, 1, "head", created, ended,
               started, ended, None, None)
        events = [(job_id, created, None, "PENDING", None, 0), (job_id, started, "PENDING", "RUNNING", None, 1),
                  (job_id, ended, "RUNNING", status, reason, 1)]
        attempt = (job_id, 1, status, "head", 1000 + seq % 30000, code, reason, started, ended)
        yield job, events, attempt


def populate_sqlite(path: Path, n: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    rows = finished_jobs(n)
    while True:
        chunk = [r for _, r in zip(range(50_000), rows)]
        if not chunk:
            break
        conn.executemany(f"INSERT INTO job ({','.join(JOB_COLS)}) VALUES ({','.join('?' * len(JOB_COLS))})",
                         [c[0] for c in chunk])
        conn.executemany(f"INSERT INTO jobevent ({','.join(EVENT_COLS)}) VALUES ({','.join('?' * len(EVENT_COLS))})",
                         [e for c in chunk for e in c[1]])
        conn.executemany(f"INSERT INTO attempt ({','.join(ATTEMPT_COLS)}) "
                         f"VALUES ({','.join('?' * len(ATTEMPT_COLS))})", [c[2] for c in chunk])
        conn.commit()
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


def populate_postgres(url: str, n: int) -> None:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        rows = list(finished_jobs(n))
        with cur.copy(f"COPY job ({','.join(JOB_COLS)}) FROM STDIN") as cp:
            for job, _, _ in rows:
                cp.write_row(job)
        with cur.copy(f"COPY jobevent ({','.join(EVENT_COLS)}) FROM STDIN") as cp:
            for _, events, _ in rows:
                for e in events:
                    cp.write_row(e)
        with cur.copy(f"COPY attempt ({','.join(ATTEMPT_COLS)}) FROM STDIN") as cp:
            for _, _, attempt in rows:
                cp.write_row(attempt)
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")


def recount(url: str) -> None:
    """The rows were written behind the daemon's back: count them as it would have."""
    from sage_ops.server.storage.database import make_engine
    from sage_ops.server.storage.job_counts import recount

    engine = make_engine(url)
    with engine.begin() as conn:
        recount(conn)
    engine.dispose()


def timed(fn: Any, samples: int, budget: float = 20.0) -> list[float]:
    """Up to `samples` timings, fewer if they take longer than `budget` seconds in all."""
    out: list[float] = []
    stop = time.perf_counter() + budget
    while len(out) < samples and time.perf_counter() < stop:
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run(args: Any) -> dict[str, Any]:
    from sage_ops.client import JobManagerClient

    pg = None
    env = {}
    if args.postgres:
        from harness import TempPostgres

        pg = TempPostgres()
        env["SAGE_OPS_DATABASE__URL"] = pg.new_database()
    bench = Bench(env=env)
    figures: dict[str, Any] = {"jobs": args.jobs, "database": "postgresql" if pg else "sqlite"}
    try:
        health = bench.start()  # creates the schema (and starts the Ray head)
        figures["daemon_start_empty_s"] = health["start_s"]
        bench.stop_daemon()
        t = time.perf_counter()
        if pg:
            populate_postgres(env["SAGE_OPS_DATABASE__URL"], args.jobs)
        else:
            populate_sqlite(bench.db, args.jobs)
        recount(env.get("SAGE_OPS_DATABASE__URL") or f"sqlite:///{bench.db}")
        print(f"  store: {args.jobs:,} finished jobs written in {time.perf_counter() - t:.0f} s")
        health = bench.start()
        figures["daemon_start_s"] = health["start_s"]
        pid = health["pid"]
        figures["daemon_rss_mb_at_start"] = rss_mb(pid)
        client = JobManagerClient(bench.address, config={"timeout": 120})
        jobs = client.list_jobs(limit=500)
        some = [j.id for j in jobs]
        # This process stands for the CLI (a fresh process per command) and the TUI, which keeps
        # what it is made of out of the collector's full passes (tui/app.py, freeze_heap). Without
        # it, the heap this benchmark built (its imports, Ray's, the loader's) made every 40th
        # request here wait for a 50 ms full collection: that, not the daemon, was the p99.
        gc.collect()
        gc.freeze()
        queries = {
            "jobs_first_page": lambda: client.list_jobs(limit=100),
            "jobs_status_failed": lambda: client.list_jobs(status="FAILED", limit=100),
            "jobs_name_glob": lambda: client.list_jobs(name="sweep-12*", limit=100),
            "jobs_rare_name": lambda: client.list_jobs(name="nothing-*", limit=100),
            "jobs_tenant": lambda: client.list_jobs(tenant="team-3", limit=100),
            "status_job": lambda: client.get_job(random.choice(some)),
            "stats": client.get_statistics,
        }
        for key, fn in queries.items():
            fn()  # warm
            lat = timed(fn, args.samples)
            figures[f"{key}_p50_ms"], figures[f"{key}_p99_ms"] = ms(lat, 50), ms(lat, 99)
            print(f"  store: {key:20s} p50 {figures[f'{key}_p50_ms']:8.2f} ms  p99 {figures[f'{key}_p99_ms']:8.2f} ms")
        figures["daemon_rss_mb"] = rss_mb(pid)
        figures["database_mb"] = (_pg_size(env["SAGE_OPS_DATABASE__URL"]) if pg else
                                  round(sum(p.stat().st_size for p in bench.state.glob("sage-ops.db*")) / 2**20, 1))
        client.close()
        figures["batch_into_store_per_s"] = round(asyncio.run(batch(args.batch, socket_path=bench.socket))[0])
        print(f"  store: one batch of {args.batch:,} into it: {figures['batch_into_store_per_s']:,} jobs/s")
    finally:
        bench.stop()
        if pg:
            pg.stop()
    return figures


def _pg_size(url: str) -> float:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return round(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20, 1)

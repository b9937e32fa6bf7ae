"""Submit throughput, end-to-end throughput and submit->RUNNING latency, optionally side by side
with Ray's own Job Submission API.

    python benchmarks/submit_throughput.py                 # N=1000, batch of 20000
    python benchmarks/submit_throughput.py -n 200 --vs-ray-jobs

It starts a private daemon (its own HOME, SQLite file and local Ray head with the dashboard) so
it never touches your real state, and stops both at the end. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TRUE, Bench, RawHTTP, pct, rss_mb  # noqa: E402 - the shared harness

from sage_ops.client import AsyncJobManagerClient, JobManagerClient  # noqa: E402

__all__ = ["TRUE", "Bench", "pct", "rss_mb"]

async def blocker(client: AsyncJobManagerClient, cpus: float) -> str:
    """A job holding every CPU, so submitted jobs queue (pure submit cost, nothing runs)."""
    job = await client.submit_job({"command": ["sleep", "600"], "resources": {"cpu": cpus}, "name": "blocker"})
    return job.id


def _submit_worker(address: str, count: int, start: Any, out: Any) -> None:
    client = JobManagerClient(address, config={"timeout": 600})
    client.health_check()  # connect before the clock starts
    lat, ids = [], []
    start.wait()
    for _ in range(count):
        t = time.perf_counter()
        ids.append(client.submit_job(TRUE).id)
        lat.append(time.perf_counter() - t)
    out.put((lat, ids))


def single_submits(address: str, n: int, clients: int) -> tuple[float, list[str]]:
    """N one-job requests from `clients` processes (one keep-alive connection each), like many
    scripts calling `sage-ops submit` or the Python client at once."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_submit_worker, args=(address, n // clients + (i < n % clients), start, out))
             for i in range(clients)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    start.set()
    lat: list[float] = []
    ids: list[str] = []
    for _ in procs:
        more_lat, more_ids = out.get()
        lat += more_lat
        ids += more_ids
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    print(f"  single submits : {n / elapsed:9.0f} jobs/s  ({n} jobs, one per request, {clients} client processes, "
          f"latency p50 {pct(lat, 50) * 1000:.2f} ms p99 {pct(lat, 99) * 1000:.2f} ms)")
    return n / elapsed, ids


async def raw_single_submits(socket_path: Path | None, n: int, conns: int = 16, tcp: tuple[str, int] | None = None,
                             token: str | None = None, quiet: bool = False) -> tuple[float, list[str]]:
    """The same one-job requests from a minimal HTTP/1.1 keep-alive client (a few us per request),
    so the figure is the daemon's own rate rather than the Python client's (httpx ~1.5 ms each).
    Over the Unix socket by default, or over TCP; with a bearer token if given."""
    ids: list[str] = []
    left = n

    async def conn() -> None:
        nonlocal left
        http = await RawHTTP(socket_path, tcp, token).connect()
        request = http.request_bytes("POST", "/v1/jobs", TRUE)
        while left > 0:
            left -= 1
            status, reply = await http.send(request)
            if "id" not in reply:
                raise SystemExit(f"submit refused ({status}): {reply}")
            ids.append(reply["id"])
        await http.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(conns)))
    elapsed = time.perf_counter() - t0
    if not quiet:
        print(f"  single submits : {n / elapsed:9.0f} jobs/s  ({n} jobs, one per request, {conns} keep-alive "
              "connections of a minimal HTTP client: the daemon's own rate)")
    return n / elapsed, ids


async def batch_submit(client: AsyncJobManagerClient, n: int) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    jobs = await client.submit_batch([TRUE] * n)
    elapsed = time.perf_counter() - t0
    print(f"  one batch      : {n / elapsed:9.0f} jobs/s  ({n} jobs in one request, {elapsed:.2f} s)")
    return n / elapsed, [j.id for j in jobs]


async def cancel_all(client: AsyncJobManagerClient, ids: list[str]) -> None:
    for i in range(0, len(ids), 5000):
        await client.cancel_jobs(ids[i:i + 5000])


async def end_to_end(client: AsyncJobManagerClient, n: int) -> float:
    t0 = time.perf_counter()
    ids = [j.id for j in await client.submit_batch([TRUE] * n)]
    await client.wait(ids[-1])  # FIFO: the last one ends (about) last; then wait for any stragglers
    while (await client.get_statistics()).active_jobs:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    views = await client.list_jobs(limit=n)
    bad = [v for v in views if v.status != "COMPLETED"]
    print(f"  end to end     : {n / elapsed:9.0f} jobs/s  ({n} `true` jobs submitted in one batch, all done in "
          f"{elapsed:.2f} s, {len(bad)} not COMPLETED)")
    return n / elapsed


async def idle_latency(client: AsyncJobManagerClient, samples: int) -> list[float]:
    lat = []
    for _ in range(samples):
        job = await client.submit_job(TRUE)
        view = await client.wait(job.id)
        if view.started_at:
            lat.append((view.started_at - view.created_at).total_seconds())
    print(f"  submit->RUNNING: p50 {pct(lat, 50) * 1000:6.1f} ms  p99 {pct(lat, 99) * 1000:6.1f} ms  "
          f"(idle cluster, {len(lat)} jobs one at a time, daemon timestamps)")
    return lat


def ray_jobs(n: int, dashboard: str, window: int) -> float:
    """The same `true` jobs through Ray's JobSubmissionClient (at most `window` in flight)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(dashboard)
    done_states = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    t0 = time.perf_counter()
    inflight: list[str] = []
    submitted = finished = failed = 0
    while finished < n:
        while submitted < n and len(inflight) < window:
            inflight.append(client.submit_job(entrypoint="true"))
            submitted += 1
        still = []
        for sid in inflight:
            status = client.get_job_status(sid)
            if status in done_states:
                finished += 1
                failed += status != JobStatus.SUCCEEDED
            else:
                still.append(sid)
        inflight = still
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    print(f"  Ray Jobs API   : {n / elapsed:9.2f} jobs/s  ({n} `true` jobs, {window} in flight, {elapsed:.1f} s, "
          f"{failed} failed)")
    return n / elapsed


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="jobs per phase (single submits, end to end)")
    ap.add_argument("--batch", type=int, default=20000, help="jobs in the one-batch phase")
    ap.add_argument("--clients", type=int, default=8, help="client processes for the single-submit phase")
    ap.add_argument("--latency-samples", type=int, default=100)
    ap.add_argument("--vs-ray-jobs", action="store_true", help="also run N jobs through Ray's Job Submission API")
    ap.add_argument("--ray-window", type=int, default=8, help="Ray jobs in flight at once (each is an actor)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="sgo-bench-", dir="/tmp"))
    bench = Bench(home)
    health = bench.start()
    cpus = health["ray"]["resources"].get("CPU", 1)
    print(f"sage-ops benchmark: daemon on {bench.address}, Ray {health['ray']['address']} ({cpus:g} CPUs), "
          f"SQLite {home}/state/sage-ops/sage-ops.db")
    figures: dict[str, Any] = {"n": args.n, "batch": args.batch, "cpus": cpus}
    pid = health["pid"]
    try:
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:
            block = await blocker(client, cpus)
            figures["single_submits_per_s"], ids = single_submits(bench.address, args.n, args.clients)
            figures["single_submits_raw_per_s"], raw = await raw_single_submits(bench.socket, args.n)
            figures["batch_submits_per_s"], more = await batch_submit(client, args.batch)
            await cancel_all(client, ids + raw + more + [block])
            figures["daemon_rss_mb_after_submits"] = round(rss_mb(pid), 1)
            figures["latency_s"] = await idle_latency(client, args.latency_samples)
            figures["submit_to_running_p50_ms"] = round(pct(figures["latency_s"], 50) * 1000, 2)
            figures["submit_to_running_p99_ms"] = round(pct(figures["latency_s"], 99) * 1000, 2)
            del figures["latency_s"]
            figures["end_to_end_per_s"] = await end_to_end(client, args.n)
            figures["daemon_rss_mb"] = round(rss_mb(pid), 1)
            print(f"  daemon memory  : {figures['daemon_rss_mb']:.0f} MB RSS")
        if args.vs_ray_jobs:
            token = home / "state" / "sage-ops" / "ray" / "auth_token"
            os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
            figures["ray_jobs_per_s"] = ray_jobs(args.n, health["ray"]["dashboard"], args.ray_window)
            ratio = figures["end_to_end_per_s"] / figures["ray_jobs_per_s"]
            figures["ratio_vs_ray_jobs"] = round(ratio, 1)
            print(f"  sage-ops / Ray Jobs end to end: {ratio:.0f}x")
    finally:
        bench.stop()
    figures["when"] = datetime.now().isoformat(timespec="seconds")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

"""Logs at volume: one job writes `--log-mb` MiB of stdout (100-byte lines, 1 GiB by default) while
one follower reads `GET /v1/jobs/ID/logs?follow=true`; then `--followers` followers (50) follow one
job at once. Printed: the job's stdout delivered per second to a follower, and follower lag p99
(the time a line reaches the follower minus the time the job wrote it; every 1,000th line carries
its write time).

    python -m benchmarks logs --log-mb 1024 --followers 50
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from common import Bench, RawHTTP, ms, rss_mb

from sage_ops.client import AsyncJobManagerClient

LINE = 100  # bytes per line, newline included
WRITER = """
import sys, time
blocks = int(sys.argv[1])
pad = "x" * 90
rest = (pad + "\\n") * 999
w = sys.stdout.buffer.write
for _ in range(blocks):
    w(("T=%.6f " % time.time()).encode() + (pad + "\\n" + rest).encode())
"""


def blocks(mb: int) -> int:
    """Blocks of 1,000 lines the writer prints for `mb` MiB (the T= line is a few bytes longer)."""
    return max(1, mb * 2**20 // (LINE * 1000))


def writer(mb: int) -> dict[str, Any]:
    return {"command": ["python", "-c", WRITER, str(blocks(mb))], "resources": {"cpu": 1}, "name": f"log-{mb}mb"}


async def follow(bench: Bench, job_id: str) -> dict[str, Any]:
    """Bytes, lines and lag samples of one follower, from its first byte to the job's end."""
    http = await RawHTTP(bench.socket).connect()
    lags: list[float] = []
    size = lines = 0
    first = None
    marker = b'"message":"T='
    async for chunk in http.stream(f"/v1/jobs/{job_id}/logs?follow=true"):
        now = time.time()
        first = first or time.perf_counter()
        size += len(chunk)
        lines += chunk.count(b"\n")
        at = chunk.rfind(marker)
        if at >= 0:
            stamp = chunk[at + len(marker):chunk.index(b" ", at + len(marker))]
            lags.append(now - float(stamp))
    await http.close()
    return {"bytes": size, "lines": lines, "lags": lags, "seconds": time.perf_counter() - (first or 0)}


async def one_run(bench: Bench, client: AsyncJobManagerClient, mb: int, followers: int) -> dict[str, Any]:
    job = await client.submit_job(writer(mb))
    t0 = time.perf_counter()
    results = await asyncio.gather(*(follow(bench, job.id) for _ in range(followers)))
    elapsed = time.perf_counter() - t0
    view = await client.wait(job.id)
    lags = [lag for r in results for lag in r["lags"]]
    expect = blocks(mb) * 1000
    complete = sum(r["lines"] == expect for r in results)
    return {"status": view.status.value, "seconds": round(elapsed, 2), "stdout_mb_per_s": round(mb / elapsed, 1),
            "wire_mb_per_s": round(sum(r["bytes"] for r in results) / 2**20 / elapsed, 1),
            "lag_p50_ms": ms(lags, 50), "lag_p99_ms": ms(lags, 99), "lag_max_ms": ms(lags, 100),
            "followers_complete": complete, "lines_expected": expect,
            "lines_seen_min": min(r["lines"] for r in results)}


async def run(args: Any) -> dict[str, Any]:
    bench = Bench(env={"SAGE_OPS_STORAGE__MAX_LOG_BYTES": str((2 * args.log_mb + 64) << 20)})  # past the quota
    # the log would end at its marker, and the follower with it
    health = bench.start()
    pid = health["pid"]
    figures: dict[str, Any] = {"log_mb": args.log_mb}
    try:
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:
            one = await one_run(bench, client, args.log_mb, 1)
            print(f"  logs: {args.log_mb} MiB, 1 follower: {one}")
            figures.update({"follower_mb_per_s": one["stdout_mb_per_s"], "follower_lag_p99_ms": one["lag_p99_ms"],
                            "follower_lag_max_ms": one["lag_max_ms"],
                            "one_follower_complete": one["followers_complete"]})
            figures["daemon_rss_mb_after_one"] = rss_mb(pid)
            mb = max(1, args.log_mb // 10)
            many = await one_run(bench, client, mb, args.followers)
            print(f"  logs: {mb} MiB, {args.followers} followers: {many}")
            figures.update({"many_followers": args.followers, "many_log_mb": mb,
                            "many_stdout_mb_per_s": many["stdout_mb_per_s"],
                            "many_wire_mb_per_s_total": many["wire_mb_per_s"],
                            "many_lag_p99_ms": many["lag_p99_ms"], "many_complete": many["followers_complete"]})
            figures["daemon_rss_mb"] = rss_mb(pid)
            files = (bench.state / "storage" / "logs").rglob("*.log")
            figures["log_file_mb"] = round(sum(p.stat().st_size for p in files) / 2**20, 1)
    finally:
        bench.stop()
    return figures

"""Soak: `--minutes` (30) of mixed load, bounded in count: about 10 submits/s with at most 100 jobs
active, a third of them cancelled while they sleep, failing jobs retried by hand, every 20th job's
logs followed to the end, one event-stream subscriber throughout. The daemon's RSS is sampled every
minute; at the end every submitted job must exist exactly once and have ended.

    python -m benchmarks soak --minutes 30
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from common import Bench, RawHTTP, rss_parts

from sage_ops.client import AsyncJobManagerClient
from sage_ops.errors import Conflict

ACTIVE = 100
RATE = 10.0  # submits per second, at most
KINDS = [({"command": ["true"]}, 6), ({"command": ["sleep", "3"], "name": "sleeper"}, 2),
         ({"command": ["false"], "name": "fails", "retry_policy": {"max_retries": 1, "retry_delay": 0.5}}, 1),
         ({"command": ["sh", "-c", "for i in $(seq 200); do echo line $i; done"], "name": "talker"}, 1)]


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB per hour."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    return 0.0 if not var else sum((t - mx) * (v - my) for t, v in samples) / var * 3600


async def run(args: Any) -> dict[str, Any]:
    bench = Bench()
    health = bench.start()
    pid = health["pid"]
    rng = random.Random(3)
    submitted: list[str] = []
    counts = {"conflicts": 0, "cancelled": 0, "retried": 0, "followed": 0, "follow_lines": 0, "events": 0, "resyncs": 0}
    rss: list[tuple[float, float]] = []
    anon: list[float] = []  # RssAnon of each sample: the heap alone, without mapped files
    end = time.monotonic() + args.minutes * 60
    specs = [dict(spec, resources={"cpu": 0.25}) for spec, w in KINDS for _ in range(w)]
    try:
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:

            async def subscriber() -> None:
                http = await RawHTTP(bench.socket).connect()
                async for chunk in http.stream("/v1/events?follow=true"):
                    counts["events"] += chunk.count(b'"kind":"job"')
                    counts["resyncs"] += chunk.count(b'"kind":"resync"')

            async def follow(job_id: str) -> None:
                async for _ in client.stream_job_logs(job_id):
                    counts["follow_lines"] += 1
                counts["followed"] += 1

            async def sampler() -> None:
                t0 = time.monotonic()
                while True:
                    parts = rss_parts(pid)
                    rss.append((time.monotonic() - t0, parts["VmRSS"]))
                    anon.append(parts["RssAnon"])
                    print(f"  soak: {len(submitted):6d} submitted, RSS {parts}, {counts}", flush=True)
                    await asyncio.sleep(60)

            background = [asyncio.create_task(subscriber()), asyncio.create_task(sampler())]
            followers: set[asyncio.Task[None]] = set()
            tick = 0
            while time.monotonic() < end:
                tick += 1
                stats = await client.get_statistics()
                if stats.active_jobs < ACTIVE:
                    job = await client.submit_job(rng.choice(specs))
                    submitted.append(job.id)
                    if job.name == "talker" or len(submitted) % 20 == 0:
                        task = asyncio.create_task(follow(job.id))
                        followers.add(task)
                        task.add_done_callback(followers.discard)
                if tick % 10 == 0:  # cancel a sleeper, retry a failed job
                    sleepers = await client.list_jobs(status=["PENDING", "RUNNING"], name="sleeper", limit=20)
                    try:  # either may lose a race with the job itself: a clear 409, counted
                        if sleepers:
                            await client.cancel_job(rng.choice(sleepers).id)
                            counts["cancelled"] += 1
                        failed = await client.list_jobs(status="FAILED", name="fails", limit=5)
                        if failed:
                            await client.retry_job(rng.choice(failed).id)
                            counts["retried"] += 1
                    except Conflict:
                        counts["conflicts"] += 1
                await asyncio.sleep(1 / RATE)
            while (await client.get_statistics()).active_jobs:
                await asyncio.sleep(0.5)
            await asyncio.wait_for(asyncio.gather(*followers, return_exceptions=True), 60)
            parts = rss_parts(pid)
            rss.append((args.minutes * 60, parts["VmRSS"]))
            anon.append(parts["RssAnon"])
            for task in background:
                task.cancel()
            seen: list[str] = []
            cursor = None
            while True:
                page = await client.list_jobs(limit=1000, cursor=cursor, page=True)
                seen += [j.id for j in page.jobs]
                if not page.next_cursor:
                    break
                cursor = page.next_cursor
            active = (await client.get_statistics()).active_jobs
    finally:
        bench.stop()
    half = [s for s in rss if s[0] >= args.minutes * 30]
    return {"minutes": args.minutes, "submitted": len(submitted), **counts,
            "lost_jobs": len(set(submitted) - set(seen)) + active,
            "duplicated_jobs": len(seen) - len(set(seen)) + len(set(seen) - set(submitted)),
            "rss_first_mb": rss[0][1], "rss_last_mb": rss[-1][1], "rss_max_mb": max(v for _, v in rss),
            "rss_trend_mb_per_hour": round(slope_per_hour(half or rss), 1),
            "rss_samples": [v for _, v in rss], "rss_anon_samples": anon}

"""The event stream under a burst: `--followers` (50) TUI-like subscribers follow `GET /v1/events`
while `--burst` (10,000) `true` jobs are submitted in one batch and run. Each subscriber counts
the job events it got, `resync` lines (a subscriber told it fell behind) and its lag: the time a
line arrives minus the event's time stamp, taken when the change is planned, before its commit.
The batch's own events are stamped before one commit of all 10,000 jobs, so the worst lag is also
given counted from the batch's reply. The lag percentiles are per chunk a subscriber reads (its
last event's lag): the batch's 20,000 events come in a few dozen chunks, so `lag_p99_ms` lands
among them; `live_lag_p99_ms` is over the events stamped after the batch's reply (the jobs
starting and ending while a TUI watches). "Silently dropped": a subscriber that got fewer events than
were committed and was not told so.

    python -m benchmarks events --followers 50 --burst 10000
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime
from typing import Any

from common import TRUE, Bench, RawHTTP, ms, rss_mb

from sage_ops.client import AsyncJobManagerClient

SEQ = re.compile(rb'"seq":(\d+)')
TIME = re.compile(rb'"time":"([^"]+)"')


class Subscriber:
    def __init__(self) -> None:
        self.events = self.resyncs = 0
        self.last_seq = 0
        self.seen: list[tuple[float, float]] = []  # (when a chunk's last event arrived, its commit stamp)
        self.ready = asyncio.Event()

    async def follow(self, bench: Bench, until: asyncio.Event) -> None:
        http = await RawHTTP(bench.socket).connect()
        async for chunk in http.stream("/v1/events?follow=true"):
            now = time.time()
            self.ready.set()  # the first line is the "live from here" heartbeat
            self.events += chunk.count(b'"kind":"job"')
            self.resyncs += chunk.count(b'"kind":"resync"')
            tail = chunk[chunk.rfind(b"\n", 0, len(chunk) - 1) + 1:]
            if (m := SEQ.search(tail)) is not None:
                self.last_seq = int(m.group(1))
            if b'"kind":"job"' in tail and (t := TIME.search(tail)) is not None:
                self.seen.append((now, datetime.fromisoformat(t.group(1).decode()).timestamp()))
            if until.is_set():
                break
        await http.close()


async def committed_after(bench: Bench, seq: int) -> tuple[int, int]:
    """(job events committed after `seq`, the newest seq), read back without following."""
    http = await RawHTTP(bench.socket).connect()
    count, newest = 0, seq
    async for chunk in http.stream(f"/v1/events?after={seq}&follow=false"):
        count += chunk.count(b'"kind":"job"')
        for line in chunk.splitlines():
            if line.strip():
                newest = max(newest, json.loads(line)["seq"])
    await http.close()
    return count, newest


async def run(args: Any) -> dict[str, Any]:
    bench = Bench()
    health = bench.start()
    pid = health["pid"]
    figures: dict[str, Any] = {"subscribers": args.followers, "burst_jobs": args.burst}
    try:
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:
            _, start = await committed_after(bench, 0)
            subs = [Subscriber() for _ in range(args.followers)]
            stop = asyncio.Event()
            tasks = [asyncio.create_task(s.follow(bench, stop)) for s in subs]
            await asyncio.gather(*(s.ready.wait() for s in subs))
            t0, wall0 = time.perf_counter(), time.time()
            await client.submit_batch([TRUE] * args.burst)
            acked = time.time()  # the batch is committed: its events, stamped before, can be streamed
            while (await client.get_statistics()).active_jobs:
                await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - t0
            expected, newest = await committed_after(bench, start)
            deadline = time.monotonic() + 30
            while any(s.last_seq < newest for s in subs) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            seen = [x for s in subs for x in s.seen]
            lags = [now - stamp for now, stamp in seen]
            worst, when = max(((now - stamp, now) for now, stamp in seen), default=(float("nan"), wall0))
            figures.update({
                "burst_seconds": round(elapsed, 2), "events_committed": expected,
                "subscribers_complete": sum(s.events >= expected for s in subs),
                "subscribers_resynced": sum(s.resyncs > 0 for s in subs),
                "silently_dropped": sum(s.events < expected and not s.resyncs for s in subs),
                "lag_p50_ms": ms(lags, 50), "lag_p99_ms": ms(lags, 99),
                "live_lag_p99_ms": ms([now - stamp for now, stamp in seen if stamp >= acked], 99),
                "worst_lag_s": round(worst, 3),
                "worst_lag_at_s": round(when - wall0, 2),  # after the burst's submit began
                "burst_ack_s": round(acked - wall0, 2),  # the batch's submit: validated, planned, committed
                # for the batch's own events, counted from the batch's reply (which comes after its commit)
                "worst_lag_after_ack_s": round(max((now - max(stamp, acked) for now, stamp in seen),
                                                      default=float("nan")), 3),
                "daemon_rss_mb": rss_mb(pid),
            })
            print(f"  events: {figures}")
    finally:
        bench.stop()
    return figures

"""Submit rates: single submits from 1 and 16 concurrent clients, and one batch, over the Unix
socket and over TCP with a token. A minimal keep-alive HTTP client sends the requests, so the
figure is the daemon's (durable: each reply comes after the commit that holds the job); next to
the one-connection figure, the Python client (JobManagerClient, one thread, one job at a time,
as a script submits). A job holding every CPU keeps the submitted ones queued: only the submit
path is measured.

    python -m benchmarks submit -n 2000 --batch 50000
"""

from __future__ import annotations

import time
from typing import Any

from common import TRUE, Bench, RawHTTP, rss_mb
from submit_throughput import blocker, cancel_all, raw_single_submits

from sage_ops.client import AsyncJobManagerClient, JobManagerClient


async def batch(n: int, **connect: Any) -> tuple[float, list[str]]:
    """Jobs/s of one batch submit of `n` `true` jobs over a connection of its own (RawHTTP's
    arguments), made before the clock starts; and the jobs' ids."""
    body = {"jobs": [TRUE] * n}
    http = await RawHTTP(**connect).connect()
    try:
        t0 = time.perf_counter()
        status, reply = await http.call("POST", "/v1/jobs/batch", body)
        elapsed = time.perf_counter() - t0
    finally:
        await http.close()
    if status != 201:
        raise SystemExit(f"batch refused ({status}): {reply}")
    return n / elapsed, [j["id"] for j in reply["jobs"]]


def client_submits(address: str, n: int, token: str | None) -> tuple[float, list[str]]:
    """N submits one after another from one JobManagerClient in one thread (its keep-alive
    connection, its validation and parsing included)."""
    with JobManagerClient(address, config={"timeout": 600}, token=token) as client:
        client.health_check()  # connected before the clock starts
        t = time.perf_counter()
        ids = [client.submit_job(TRUE).id for _ in range(n)]
        return n / (time.perf_counter() - t), ids


async def run(args: Any) -> dict[str, Any]:
    bench = Bench()
    health = bench.start("--tcp", "127.0.0.1:0")
    pid = health["pid"]
    figures: dict[str, Any] = {"single_n": args.n, "batch_n": args.batch}
    try:
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:
            held = [await blocker(client, health["ray"]["resources"].get("CPU", 1))]
            modes = {"unix": {"socket_path": bench.socket}, "tcp": {"socket_path": None, "tcp": bench.tcp,
                                                                     "token": bench.token()}}
            for conns in (1, 16):  # the transports side by side, each on the same queue length
                for mode, kw in modes.items():
                    rate, ids = await raw_single_submits(n=args.n, conns=conns, quiet=True, **kw)
                    figures[f"single_{mode}_{conns}_per_s"] = round(rate)
                    held += ids
                    print(f"  submit: single, {mode}, {conns:2d} clients: {rate:8.0f} jobs/s", flush=True)
                    if conns == 1:
                        address = bench.address if mode == "unix" else "tcp://{}:{}".format(*bench.tcp)
                        rate, ids = client_submits(address, args.n, kw.get("token"))
                        figures[f"client_{mode}_1_per_s"] = round(rate)
                        held += ids
                        print(f"  submit: single, {mode},  1 JobManagerClient: {rate:8.0f} jobs/s", flush=True)
            for mode, kw in modes.items():
                rate, ids = await batch(args.batch, **kw)
                figures[f"batch_{mode}_per_s"] = round(rate)
                held += ids
                print(f"  submit: batch of {args.batch}, {mode}: {rate:8.0f} jobs/s", flush=True)
            figures["daemon_rss_mb_queued"] = rss_mb(pid)
            t = time.perf_counter()
            await cancel_all(client, held)
            figures["cancel_per_s"] = round(len(held) / (time.perf_counter() - t))
            figures["daemon_rss_mb"] = rss_mb(pid)
    finally:
        bench.stop()
    return figures

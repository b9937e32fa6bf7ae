"""What authentication costs: the daemon's own single-submit rate (a minimal keep-alive HTTP
client, so the figure is the daemon's) as the socket's owner (peer uid, no token), with a
member token on the Unix socket, and with that token over TCP — interleaved rounds, medians.

    python benchmarks/auth_overhead.py [-n 2000] [--rounds 3]

A private daemon (own HOME, SQLite, local Ray head); a job holding every CPU keeps the submitted
jobs queued, so only the submit path is measured. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path

from submit_throughput import Bench, blocker, cancel_all, raw_single_submits

from sage_ops.client import AsyncJobManagerClient


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="submits per mode and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bench = Bench(Path(tempfile.mkdtemp(prefix="sgo-bench-", dir="/tmp")))
    bench.cli("daemon", "start", "--tcp", "127.0.0.1:0")
    try:
        bench.cli("tenant", "create", "bench")
        # the limiter runs, at a rate this benchmark never reaches
        made = json.loads(bench.cli("token", "create", "--tenant", "bench", "--name", "bench", "--rate-limit",
                                    "1000000", "--json"))
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:
            health = await client.health_check()
            host, port = health.tcp.rsplit(":", 1)
            cpus = health.ray.resources.get("CPU", 1)
            held = [await blocker(client, cpus)]
            modes = {"unix socket, peer uid (owner)": {"socket_path": bench.socket},
                     "unix socket, member token": {"socket_path": bench.socket, "token": made["token"]},
                     "tcp, member token": {"socket_path": None, "tcp": (host, int(port)), "token": made["token"]}}
            rates: dict[str, list[float]] = {m: [] for m in modes}
            for _ in range(args.rounds):
                for mode, kw in modes.items():
                    rate, ids = await raw_single_submits(n=args.n, quiet=True, **kw)
                    rates[mode].append(rate)
                    held += ids
            await cancel_all(client, held)
        base = statistics.median(rates["unix socket, peer uid (owner)"])
        print(f"auth overhead: {args.n} single submits x {args.rounds} rounds per mode (medians)")
        for mode, values in rates.items():
            med = statistics.median(values)
            print(f"  {mode:32s}: {med:7.0f} jobs/s  ({med / base - 1:+.1%} vs peer uid; rounds: "
                  f"{', '.join(f'{v:.0f}' for v in values)})")
    finally:
        bench.stop()


if __name__ == "__main__":
    asyncio.run(main())

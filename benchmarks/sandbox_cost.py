"""What the single-user sandbox (bubblewrap) costs: the `true`-job rate of one single-user daemon
(`security.switch_users: off`) with `security.sandbox: auto` and `off`, alternating rounds on the
same Ray head (the daemon restarts between them; the better round of each is kept: noise on
shared cores only ever slows).

    python benchmarks/sandbox_cost.py -n 300 [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import TRUE, Bench  # noqa: E402 - this directory first
from dag import run as timed_batch  # noqa: E402

from sage_ops.client import AsyncJobManagerClient  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bench = Bench(env={"SAGE_OPS_SECURITY__SWITCH_USERS": "off"})
    rates: dict[str, list[float]] = {"auto": [], "off": []}
    try:
        for rnd in range(args.rounds):
            for mode in rates:
                bench.env["SAGE_OPS_SECURITY__SANDBOX"] = mode
                health = bench.start()
                print(f"sandbox {mode}: {health['identity']}")
                async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:
                    rates[mode].append((await timed_batch(client, [TRUE] * args.n, f"{mode}{rnd}"))["rate"])
                bench.stop_daemon()
    finally:
        bench.stop()
    best = {mode: max(r) for mode, r in rates.items()}
    print(f"sandbox: {best['auto']:.1f} jobs/s with bubblewrap, {best['off']:.1f} without: "
          f"{100 * (1 - best['auto'] / best['off']):+.1f}%")


if __name__ == "__main__":
    asyncio.run(main())

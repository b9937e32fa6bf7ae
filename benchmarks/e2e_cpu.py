"""Where the end-to-end bound lives: the CPU every process on the machine spends per `true` job
while N of them run (flat), from /proc, grouped by role (Ray workers, the dispatcher actor, the
daemon, the raylet...). With --py-spy FILE, a GIL profile of the daemon over the same run.

    python benchmarks/e2e_cpu.py -n 2000 [--py-spy daemon.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

from common import TRUE, Bench
from dag import run as timed_batch

from sage_ops.client import AsyncJobManagerClient

HZ = os.sysconf("SC_CLK_TCK")
ROLES = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "py-spy")


def cpu_by_pid() -> dict[int, tuple[str, float, float]]:
    """(command line, own CPU seconds, CPU seconds of its reaped children) of every process."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:200]
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        out[int(pid)] = (cmd, sum(int(x) for x in fields[11:13]) / HZ,  # utime stime
                         sum(int(x) for x in fields[13:15]) / HZ)  # cutime cstime
    return out


def role(pid: int, cmd: str, daemon: int) -> str:
    if pid == daemon:
        return "sage-ops daemon"
    if pid == os.getpid():
        return "this benchmark"
    if cmd.startswith("ray::"):
        return cmd.split()[0]
    return next((r for r in ROLES if r in cmd), "other")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--py-spy", metavar="FILE", help="also record the daemon's GIL profile (raw) here")
    args = ap.parse_args()
    bench = Bench()
    health = bench.start()
    try:
        async with AsyncJobManagerClient(bench.address, config={"timeout": 600}) as client:
            await timed_batch(client, [TRUE] * 300, "warm")  # Ray's worker pool up before counting
            spy = args.py_spy and subprocess.Popen(
                ["py-spy", "record", "-p", str(health["pid"]), "-f", "raw", "--gil", "-r", "100", "-o", args.py_spy],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            before, t0 = cpu_by_pid(), time.perf_counter()
            await timed_batch(client, [TRUE] * args.n, "flat")
            wall, after = time.perf_counter() - t0, cpu_by_pid()
            if spy:
                spy.send_signal(2)
                spy.wait()
    finally:
        bench.stop()
    own: Counter[str] = Counter()
    reaped: Counter[str] = Counter()  # the jobs' processes (and their sandbox) count for who reaped them
    for pid, (cmd, cpu, children) in after.items():
        name = role(pid, cmd, health["pid"])
        was = before.get(pid, (cmd, 0.0, 0.0))
        own[name] += cpu - was[1]
        reaped[name] += children - was[2]
    total = sum(own.values()) + sum(reaped.values())
    print(f"{args.n} jobs in {wall:.2f} s = {args.n / wall:.0f}/s; CPU used {total:.1f} s of "
          f"{(os.cpu_count() or 1) * wall:.1f} s; {total / args.n * 1000:.2f} ms per job")
    print("  ms/job   own  children  process")
    ms = 1000 / args.n
    for name, cpu in (own + reaped).most_common():
        if cpu >= 0.05:
            print(f"  {cpu * ms:6.2f} {own[name] * ms:5.2f} {reaped[name] * ms:9.2f}  {name}")


if __name__ == "__main__":
    asyncio.run(main())

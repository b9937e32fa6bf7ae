"""Failover between two daemons on one PostgreSQL, with 1,000 jobs in flight.

    python benchmarks/failover.py                # 1,000 jobs, heartbeat_interval 3 s
    python benchmarks/failover.py -n 300 --heartbeat 2

Starts a throwaway PostgreSQL, one Ray head, and two daemons on TCP (leader + standby) sharing the
database and a storage directory. Submits N jobs (each appends its id to a ledger file), kills
the leader with SIGKILL while they run, and prints: time from the kill to the first successful
submit through the standby (goal <= 5 s with heartbeat 3), jobs lost (goal 0) and jobs that ran
twice (goal 0). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import TempPostgres  # noqa: E402
from submit_throughput import Bench  # noqa: E402

from sage_ops.client import JobManagerClient  # noqa: E402
from sage_ops.config import RayConfig  # noqa: E402
from sage_ops.errors import SageOpsError  # noqa: E402
from sage_ops.server.backend.ray_backend import LocalHead  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--heartbeat", type=float, default=3.0)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sgo-failover-", dir="/tmp"))
    pg = TempPostgres()
    head = LocalHead(root / "ray-owner")
    benches: list[Bench] = []
    try:
        address = head.start(RayConfig(include_dashboard=False))
        url = pg.new_database()
        for name in ("a", "b"):
            b = Bench(root / name)
            b.env.update(head.env())
            b.env.update({"SAGE_OPS_RAY__ADDRESS": address, "SAGE_OPS_DATABASE__URL": url,
                          "SAGE_OPS_JOBMANAGER__HOST": "127.0.0.1", "SAGE_OPS_JOBMANAGER__PORT": str(free_port()),
                          "SAGE_OPS_JOBMANAGER__HEARTBEAT_INTERVAL": str(args.heartbeat),
                          "SAGE_OPS_STORAGE__PATH": str(root / "storage")})
            b.cli("daemon", "start")
            benches.append(b)
        leader, standby = (JobManagerClient(b.address).health_check() for b in benches)
        token = (benches[0].home / "config" / "sage-ops" / "token").read_text().strip()
        client = JobManagerClient(f"tcp://{leader.tcp},tcp://{standby.tcp}", token=token, config={"timeout": 30})
        print(f"sage-ops failover benchmark: {args.n} jobs, heartbeat_interval {args.heartbeat:g}s, "
              f"leader {leader.tcp} ({leader.role}), standby {standby.tcp} ({standby.role})")
        ledger = root / "ledger.txt"
        cmd = ["sh", "-c", f'echo "$SAGE_OPS_JOB_ID" >> {ledger}; sleep 0.05']
        ids = [r.id for r in client.submit_batch([{"command": cmd, "resources": {"cpu": 0.5}}] * args.n)]
        while not ledger.exists() or len(ledger.read_text().split()) < args.n // 5:
            time.sleep(0.05)
        probe = JobManagerClient(f"tcp://{standby.tcp}", token=token, config={"timeout": 2, "retry_attempts": 1})
        pid = int((benches[0].home / "state" / "sage-ops" / "daemon.pid").read_text())
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        while True:
            try:
                ids.append(probe.submit_job({"command": cmd, "resources": {"cpu": 0.5}}).id)
                break
            except SageOpsError:
                time.sleep(0.05)
        took = time.monotonic() - t0
        done_at = time.monotonic() + 600
        while client.get_statistics().active_jobs and time.monotonic() < done_at:
            time.sleep(0.2)
        views = {v.id: v for v in client.list_jobs(limit=100_000)}
        runs = ledger.read_text().split()
        lost = [i for i in ids if views.get(i) is None or views[i].status != "COMPLETED" or i not in runs]
        twice = len(runs) - len(set(runs))
        print(f"  kill -> first submit accepted by the standby: {took:.2f} s (goal <= 5 s)")
        print(f"  jobs: {len(ids)} submitted, {len(ids) - len(lost)} COMPLETED once, lost {len(lost)} (goal 0), "
              f"ran twice {twice} (goal 0)")
    finally:
        for b in benches:
            try:
                b.cli("daemon", "stop")
            except SystemExit:
                pass
        head.stop()
        pg.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

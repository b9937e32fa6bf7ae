"""An elastic pool under a real workload: three machines in one pool with max 3. By default they
are distinct hosts: network namespaces with their own addresses and sshd (tests/netns.py; root
and iproute2), joined to this machine's private Ray head on the bridge (`ray.node_ip`), installing
from a wheelhouse (`wheel_dir`: they have no package index). `--hosts loopback`: three sshd on
loopback instead, each installing Ray from the package index as `nodes add` does.

    python benchmarks/pools.py            # 1 job, then 20 at once
    python benchmarks/pools.py --burst 40 --hosts loopback

Printed, in one run:
- one job only the pool can hold: its submit to its node up, and to its job RUNNING;
- that node idle to gone (`idle_timeout` 5 s; the autoscaler looks every 5 s);
- `--burst` jobs at once: nodes added (never more than max: no over-provisioning), and the time
  until all have run.

Needs openssh-server (/usr/sbin/sshd). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import Bench, remove_nodes  # noqa: E402
from netns import Network  # noqa: E402
from sshd import Sshd  # noqa: E402

from sage_ops.client import JobManagerClient  # noqa: E402

IDLE = 5


def pool_events(client: JobManagerClient) -> list[Any]:
    return sorted(client.pool_events("bench", 1000), key=lambda e: e.time)


def node_count(bench: Bench) -> int:
    return sum(1 for n in json.loads(bench.cli("nodes", "--json")) if n["name"].startswith("bench-"))


def wait(predicate: Any, timeout: float = 900) -> float:
    """Seconds until `predicate()` holds (inf if it never did within `timeout`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.25)
    return float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--burst", type=int, default=20)
    distinct = os.geteuid() == 0 and shutil.which("ip") is not None
    ap.add_argument("--hosts", choices=["netns", "loopback"], default="netns" if distinct else "loopback")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sgo-bench-pools-", dir="/tmp"))
    with contextlib.ExitStack() as undo:  # the hosts and the home, whatever happens
        undo.callback(shutil.rmtree, home, ignore_errors=True)
        pool: dict[str, Any] = {"name": "bench", "max": 3, "idle_timeout": IDLE, "resources": {"CPU": 1, "POOLRES": 1}}
        env: dict[str, str] = {}
        if args.hosts == "netns":
            from sage_ops.nodes.wheels import build_wheelhouse

            net = Network(3)
            undo.callback(net.cleanup)
            servers = net.hosts
            wheels = home / "wheels"
            t = time.monotonic()
            build_wheelhouse(wheels, cache=home / "own-wheel")
            print(f"(wheelhouse for hosts without an index built in {time.monotonic() - t:.0f} s)")
            pool.update(hosts=[f"root@{s.address}" for s in servers], wheel_dir=str(wheels))
            env["SAGE_OPS_RAY__NODE_IP"] = net.gateway
            where = "3 hosts in network namespaces, installing from a wheelhouse"
        else:
            servers = [Sshd() for _ in range(3)]
            for s in servers:
                undo.callback(s.cleanup)
            key = servers[0].client_key
            for s in servers[1:]:  # one key for every "machine", as an operator's would be
                (s.dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
            pool["hosts"] = [f"root@127.0.0.1:{s.port}" for s in servers]
            where = "3 sshd on loopback, installing from the package index"
        pool["key"] = str(servers[0].client_key)
        known = home / "known_hosts"
        known.write_text("".join(s.known_hosts_line() for s in servers))
        bench = Bench(home, env={"SAGE_OPS_NODES__KNOWN_HOSTS": str(known), "SAGE_OPS_NODES__POOLS": json.dumps([pool]),
                                 **env})
        try:
            bench.start()
            client = JobManagerClient(bench.address, config={"timeout": 120})
            ask = {"custom_resources": {"POOLRES": 1}}
            t0 = time.time()
            job = client.submit_command(["sleep", "1"], resources=ask)
            done = client.wait(job, 900)
            ups = [e.time.timestamp() for e in client.audit(action="node.up")]  # the provisioner's own record
            joined = min(ups) if ups else float("nan")
            print(f"sage-ops pools benchmark: {where}; max 3, idle_timeout {IDLE}s")
            print(f"  one job: submit -> node up {joined - t0:6.1f} s, -> RUNNING "
                  f"{done.started_at.timestamp() - t0:6.1f} s ({done.status} on {done.node})")
            wait(lambda: node_count(bench) == 0)
            print(f"  idle -> node gone: {time.time() - done.ended_at.timestamp():6.1f} s "
                  f"(idle_timeout {IDLE} s + a pass every 5 s + drain and stop)")
            before = sum(1 for e in pool_events(client) if e.kind == "add")
            t1 = time.time()
            ids = [client.submit_command(["sleep", "2"], resources=ask) for _ in range(args.burst)]
            views = [client.wait(i, 1800) for i in ids]
            took = time.time() - t1
            adds = sum(1 for e in pool_events(client) if e.kind == "add") - before
            print(f"  {args.burst} jobs at once: {adds} node(s) added (max 3: no over-provisioning), all run in "
                  f"{took:6.1f} s, {sum(v.status == 'COMPLETED' for v in views)}/{args.burst} COMPLETED")
            wait(lambda: node_count(bench) == 0)
        finally:
            remove_nodes(bench.cli, [n["name"] for n in json.loads(bench.cli("nodes", "--json"))
                                     if n["name"].startswith("bench-")])
            bench.stop()


if __name__ == "__main__":
    main()

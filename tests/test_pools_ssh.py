"""An elastic pool end to end, through a real sshd and a real second Ray node on this machine: a
job that only the pool's node could hold is admitted, the leader's autoscaler bootstraps a node
for it (the provisioner's own SSH join), the job runs there, and the node is drained and removed
once idle for its timeout; every step is an audited pool event. Here the pool has one host on
loopback; test_pools_hosts.py has three distinct hosts in network namespaces."""

from __future__ import annotations

import json
from typing import Any

from conftest import Daemon, wait_until
from test_metrics import scrape

from sage_ops.server.pools.autoscaler import node_name


def test_a_pool_adds_a_node_for_a_job_and_lets_it_go_when_idle(ray_head: dict[str, str], sshd: Any) -> None:
    host = f"root@127.0.0.1:{sshd.port}"
    pool = {"name": "tpus", "hosts": [host], "max": 1, "idle_timeout": 3, "resources": {"CPU": 1, "TPU": 1},
            "key": str(sshd.client_key)}
    d = Daemon(ray_head, {"nodes": {"known_hosts": "KNOWN", "venv": "~/.sage-ops/venv-daemon", "pools": [pool]}})
    known = d.home / "known_hosts"
    known.write_text(sshd.known_hosts_line())  # a pool's hosts are known: an unknown key is refused
    cfg = d.home / "config.yaml"
    cfg.write_text(cfg.read_text().replace("KNOWN", str(known)))
    name = node_name("tpus", host)
    d.start()
    try:
        client = d.client(timeout=60)
        job = client.submit_command(["sh", "-c", "echo on $SAGE_OPS_NODE"], resources={"custom_resources": {"TPU": 1}})
        assert client.get_job_status(job) == "PENDING"  # admitted: the pool can hold it, though no node is up
        done = client.wait(job, timeout=600)
        assert (done.status, done.node) == ("COMPLETED", name)
        [view] = client.list_pools()
        assert (view.name, view.max, [n.name for n in view.nodes]) == ("tpus", 1, [name])
        assert 'sage_ops_pool_up{pool="tpus"} ' in scrape(d).text  # its value: as the last pass saw it

        def listed() -> set[str]:
            return {n["name"] for n in json.loads(d.run("nodes", "--json", check=True).stdout)}

        wait_until(lambda: name not in listed(), timeout=180)  # idle 3 s: drained, stopped, removed
        actions = [e.action for e in client.audit(action=None)]
        assert {"pool.add", "pool.joined", "pool.drain", "pool.stop"} <= set(actions), actions
        events = d.run("pools", "events", "tpus", check=True).stdout
        assert "1 waiting job(s) need 1 more node(s)" in events and "idle for" in events
        unknown = d.run("pools", "events", "nope")
        assert (unknown.returncode, unknown.stderr.strip()) == (1, "error: no such pool: nope")
    finally:
        d.run("nodes", "remove", name, "--force")
        d.cleanup()

"""An elastic pool of three distinct hosts (network namespaces with their own addresses and sshd,
tests/netns.py) under a real workload: the daemon's own Ray head on the bridge (`ray.node_ip`),
the pool scaling from 0 to 3 nodes and back to 0, refilling after one host's Ray is killed, and
refusing a host whose host key changed. One scenario (a module fixture) records what each step
showed; each test asserts one fact of it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, pid_alive, wait_until
from netns import Network
from test_metrics import scrape

from sage_ops import rayhead
from sage_ops.nodes.base import NODE_ENV
from sage_ops.server.pools.autoscaler import node_name

POOL = "ns"
SLOT = {"custom_resources": {"SLOT": 1}}  # only a pool's node has it
# The head's GCS declares a silent node dead after ~3 s instead of Ray's ~30 s, so that a killed
# host is a loss well within the pool's idle_timeout (as Ray's 30 s is within the default 10 min)
FAST_DEATH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
              "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def _cmd(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return b""


def _kill_node(name: str) -> int:
    """SIGKILL every process of node `name` at once (its raylet, workers, agents): a lost machine."""
    pids, _ = rayhead.marked(rayhead.processes(), f"{NODE_ENV}={name}".encode())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


@pytest.fixture(scope="module")
def seen(wheelhouse: Path) -> Iterator[dict[str, Any]]:
    net = Network(3)
    venv = Path(tempfile.mkdtemp(prefix="sgo-nsvenv-", dir="/tmp"))
    hosts = [f"root@{h.address}" for h in net.hosts]
    names = [node_name(POOL, h) for h in hosts]
    # a lost host is tried again after 3 s, not the default 30: the refill is the same, sooner
    pool = {"name": POOL, "hosts": hosts, "max": 3, "idle_timeout": 10, "backoff": 3,
            "resources": {"CPU": 1, "SLOT": 1},
            "key": str(net.key), "wheel_dir": str(wheelhouse)}  # the hosts have no package index
    d = Daemon({}, {"ray": {"node_ip": net.gateway, "num_cpus": 1, "include_dashboard": False},
                    "nodes": {"known_hosts": "KNOWN", "venv": str(venv / "venv"), "pools": [pool]}})
    d.env.update(FAST_DEATH)
    known = d.home / "known_hosts"
    known.write_text("".join(h.known_hosts_line() for h in net.hosts))
    cfg = d.home / "config.yaml"
    cfg.write_text(cfg.read_text().replace("KNOWN", str(known)))
    facts: dict[str, Any] = {"names": names, "hosts": hosts, "addresses": [h.address for h in net.hosts]}
    temp_before = set(Path("/tmp").glob("sage-ops-rt-*"))  # the hosts' /tmp is this machine's
    try:
        d.start()
        client = d.client(timeout=60)

        def running(*jobs: str) -> bool:
            return all(client.get_job_status(j) == "RUNNING" for j in jobs)

        def pool_nodes() -> dict[str, Any]:
            return {n.name: n for n in client.list_nodes() if n.name in names}

        def submit() -> str:
            return client.submit_command(["sleep", "3600"], resources=SLOT, retry_policy={"max_retries": 3})

        # 0 -> 1 -> 3: one job brings the first node (and installs the shared venv), two more the rest
        first = submit()
        facts["admitted"] = client.get_job_status(first)
        wait_until(lambda: running(first), timeout=900, interval=0.5)
        jobs = [first, submit(), submit()]
        # the daemon is killed while the two nodes join: the next one finds each joined, or failed
        # (what was started stopped) and added again; never one host twice
        wait_until(lambda: any(n.state == "JOINING" for n in pool_nodes().values()), timeout=120, interval=0.1)
        pid = int((d.state / "daemon.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), timeout=30)
        d.start()
        client = d.client(timeout=60)
        wait_until(lambda: running(*jobs), timeout=600, interval=0.5)
        facts["nodes_of_jobs"] = sorted(client.get_job(j).node for j in jobs)
        facts["node_addresses"] = sorted(n.address.split(":")[0] for n in pool_nodes().values() if n.address)
        facts["up_at_three"] = wait_until(lambda: client.list_pools()[0].up == 3 and 3, timeout=60)
        facts["raylets_per_host"] = [sum(b"raylet" in _cmd(p) for p in net.pids(ns)) for ns in net.namespaces]
        facts["metrics"] = scrape(d).text

        # one host's Ray killed: its job is retried and the pool refills
        lost = client.get_job(first).node
        facts["killed"] = _kill_node(lost)
        wait_until(lambda: client.get_job(first).attempts_made >= 2 and running(first), timeout=600, interval=0.5)
        facts["after_loss"] = client.get_job(first)
        facts["lost_events"] = [e for e in client.pool_events(POOL) if e.kind == "lost"]
        facts["lost_node"] = lost

        # 3 -> 0: the jobs end, the nodes go idle, are drained and stopped
        client.cancel_jobs(status=["PENDING", "RUNNING"])
        wait_until(lambda: not pool_nodes(), timeout=300, interval=0.5)
        facts["up_at_zero"] = wait_until(lambda: client.list_pools()[0].up == 0 and [0], timeout=60)[0]
        facts["audited"] = {e.action for e in client.audit(action=None)}
        facts["events_text"] = d.run("pools", "events", POOL, check=True).stdout
        facts["unknown_pool"] = d.run("pools", "events", "nope")
        facts["left_in_hosts"] = {ns: sorted(set(net.pids(ns)) - {h.proc.pid})
                                  for ns, h in zip(net.namespaces, net.hosts)}
        head_temp = Path((rayhead.load_record(d.state) or {})["temp_dir"]).parent
        facts["temp_dirs_left"] = sorted(set(Path("/tmp").glob("sage-ops-rt-*")) - temp_before - {head_temp})

        # a host whose key changed is refused and set aside; the job goes to the next host
        net.hosts[0].new_host_key()
        job = submit()
        wait_until(lambda: running(job), timeout=600, interval=0.5)
        facts["after_rekey_node"] = client.get_job(job).node
        facts["rekeyed_failed"] = [e for e in client.pool_events(POOL) if e.kind == "failed"]
        facts["rekeyed_detail"] = next((n.detail for n in client.list_nodes() if n.name == names[0]), None)
        client.cancel_jobs(status=["PENDING", "RUNNING"])
        yield facts
    finally:
        with contextlib.ExitStack() as undo:  # each step, whatever the one before did
            undo.callback(shutil.rmtree, venv, ignore_errors=True)
            undo.callback(net.cleanup)
            undo.callback(shutil.rmtree, d.home, ignore_errors=True)
            undo.callback(d.run, "daemon", "stop", "--ray", timeout=120)
            for name in names:
                undo.callback(d.run, "nodes", "remove", name, "--force")


def test_a_job_only_the_pool_could_hold_is_admitted_with_no_node_up(seen: dict[str, Any]) -> None:
    assert seen["admitted"] == "PENDING"


def test_three_jobs_run_on_the_three_hosts(seen: dict[str, Any]) -> None:
    assert seen["nodes_of_jobs"] == sorted(seen["names"])


def test_each_node_is_at_its_hosts_own_address(seen: dict[str, Any]) -> None:
    assert seen["node_addresses"] == sorted(seen["addresses"])


def test_the_pool_shows_three_up(seen: dict[str, Any]) -> None:
    assert seen["up_at_three"] == 3


def test_a_daemon_killed_during_the_joins_leaves_one_ray_per_host(seen: dict[str, Any]) -> None:
    assert seen["raylets_per_host"] == [1, 1, 1]


def test_the_killed_hosts_job_ran_again(seen: dict[str, Any]) -> None:
    assert seen["after_loss"].attempts_made >= 2


def test_the_loss_is_a_pool_event_naming_the_host(seen: dict[str, Any]) -> None:
    lost_host = seen["hosts"][seen["names"].index(seen["lost_node"])]
    assert [e.host for e in seen["lost_events"]] == [lost_host]


def test_the_pool_is_a_metric(seen: dict[str, Any]) -> None:
    assert f'sage_ops_pool_up{{pool="{POOL}"}} ' in seen["metrics"]


def test_each_step_of_the_pool_is_audited(seen: dict[str, Any]) -> None:
    assert {"pool.add", "pool.joined", "pool.drain", "pool.stop"} <= seen["audited"]


def test_pool_events_say_why_a_node_was_added(seen: dict[str, Any]) -> None:
    assert "waiting job(s) need" in seen["events_text"]


def test_pool_events_say_why_a_node_was_let_go(seen: dict[str, Any]) -> None:
    assert "idle for" in seen["events_text"]


def test_pool_events_of_an_unknown_pool_is_one_line(seen: dict[str, Any]) -> None:
    assert (seen["unknown_pool"].returncode, seen["unknown_pool"].stderr.strip()) == (1, "error: no such pool: nope")


def test_idle_nodes_leave_until_none_is_up(seen: dict[str, Any]) -> None:
    assert seen["up_at_zero"] == 0


def test_nothing_of_ray_is_left_on_the_hosts(seen: dict[str, Any]) -> None:
    assert seen["left_in_hosts"] == {ns: [] for ns in seen["left_in_hosts"]}


def test_no_ray_temp_dir_is_left_on_the_hosts_not_even_the_killed_ones(seen: dict[str, Any]) -> None:
    assert seen["temp_dirs_left"] == []


def test_a_host_whose_key_changed_is_not_used(seen: dict[str, Any]) -> None:
    assert seen["after_rekey_node"] == seen["names"][1]


def test_the_changed_key_is_the_reason_the_node_failed(seen: dict[str, Any]) -> None:
    assert "has CHANGED" in (seen["rekeyed_detail"] or ""), seen["rekeyed_detail"]


def test_the_refusal_is_a_pool_event(seen: dict[str, Any]) -> None:
    assert [e.host for e in seen["rekeyed_failed"]] == [seen["hosts"][0]]

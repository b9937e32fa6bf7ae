"""Elastic pools: their configuration, and their rules (server/pools/policy.py) on plain values, in
milliseconds: what a pool adds, drains and stops for a demand, and why; hypothesis over any pool
and demand for the promises (never above max, never below min, never a busy node stopped, no
over-provisioning)."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as hs
from pydantic import ValidationError
from sqlalchemy import select

from sage_ops.cluster import NodeAdd, NodeView
from sage_ops.config import Config, PoolHost, RayConfig
from sage_ops.lifecycle import NodeStatus
from sage_ops.nodes import tls
from sage_ops.nodes.base import NodeBackend, StepFailed
from sage_ops.server.backend.ray_backend import LocalHead
from sage_ops.server.pools.autoscaler import Autoscaler, PoolEvent, node_name
from sage_ops.server.pools.policy import (
    HostRecord,
    Pool,
    PoolNode,
    PoolNodeState,
    backoff,
    fits,
    nodes_for,
    plan,
    unfit_demand,
)
from sage_ops.server.pools.provisioned import ProvisionedActions, join_request
from sage_ops.server.services.provisioning import Operation, Provisioner
from sage_ops.server.storage.pool_hosts import StoredPoolHosts
from sage_ops.server.storage.store import Store
from sage_ops.server.storage.tables import Node
from sage_ops.server.storage.tables import PoolHost as PoolHostRow

UP, JOINING, DRAINING, DOWN = PoolNodeState.UP, PoolNodeState.JOINING, PoolNodeState.DRAINING, PoolNodeState.DOWN
DRAINED = PoolNodeState.DRAINED
FAILED = PoolNodeState.FAILED
GPU = {"GPU": 1.0}
NOW = 1_000_000.0


def gpu_pool(**over: object) -> Pool:
    values: dict[str, object] = {"name": "gpu", "hosts": ("h1", "h2", "h3"), "min": 0, "max": 3,
                                 "idle_timeout": 600.0, "resources": {"GPU": 1.0}}
    values.update(over)
    return Pool(**values)  # type: ignore[arg-type]


def adds(p: object) -> list[str | None]:
    return [d.host for d in p.of("add")]  # type: ignore[attr-defined]


def test_demand_that_fits_the_pool_adds_a_node() -> None:
    assert adds(plan(gpu_pool(), [], [GPU], {}, NOW)) == ["h1"]


def test_a_burst_of_twenty_adds_up_to_max_and_no_more() -> None:
    assert adds(plan(gpu_pool(), [], [GPU] * 20, {}, NOW)) == ["h1", "h2", "h3"]


def test_nodes_joining_count_against_the_demand() -> None:
    joining = [PoolNode("h1", JOINING)]
    assert adds(plan(gpu_pool(), joining, [GPU], {}, NOW)) == []


def test_at_max_the_pool_says_why_it_waits() -> None:
    nodes = [PoolNode(h, UP, running=1) for h in ("h1", "h2", "h3")]
    [wait] = plan(gpu_pool(), nodes, [GPU], {}, NOW).of("wait")
    assert wait.reason == "at max 3: 1 waiting job(s) wait for room"


def test_min_is_kept_without_demand() -> None:
    assert adds(plan(gpu_pool(min=2), [], [], {}, NOW)) == ["h1", "h2"]


def test_an_idle_node_is_drained_after_its_idle_timeout() -> None:
    node = PoolNode("h1", UP, idle_since=NOW - 600)
    [drain] = plan(gpu_pool(), [node], [], {}, NOW).of("drain")
    assert (drain.host, drain.reason) == ("h1", "idle for 600s (idle_timeout 600s)")


def test_a_node_not_yet_idle_long_enough_stays() -> None:
    node = PoolNode("h1", UP, idle_since=NOW - 599)
    assert plan(gpu_pool(), [node], [], {}, NOW).of("drain") == []


def test_an_idle_node_is_kept_for_min() -> None:
    node = PoolNode("h1", UP, idle_since=NOW - 10_000)
    assert plan(gpu_pool(min=1), [node], [], {}, NOW).of("drain") == []


def test_an_idle_node_is_kept_while_a_job_waits_for_it() -> None:
    node = PoolNode("h1", UP, idle_since=NOW - 10_000)
    assert plan(gpu_pool(), [node], [GPU], {}, NOW).of("drain") == []


def test_a_drained_node_without_jobs_is_stopped() -> None:
    [stop] = plan(gpu_pool(), [PoolNode("h1", DRAINED)], [], {}, NOW).of("stop")
    assert stop.host == "h1"


def test_a_draining_node_is_left_to_its_drain() -> None:
    assert plan(gpu_pool(), [PoolNode("h1", DRAINING)], [], {}, NOW).of("stop") == []


def test_a_drained_node_with_a_job_is_not_stopped() -> None:
    assert plan(gpu_pool(), [PoolNode("h1", DRAINED, running=1)], [], {}, NOW).of("stop") == []


def test_a_lost_node_is_refilled_for_min_and_its_host_may_serve_again() -> None:
    nodes = [PoolNode("h1", DOWN), PoolNode("h2", UP, running=1)]
    assert adds(plan(gpu_pool(min=2), nodes, [], {}, NOW)) == ["h1"]  # a DOWN host may be tried again


def test_a_host_that_failed_is_set_aside_until_its_backoff_ends() -> None:
    hosts = {"h1": HostRecord(failures=1, retry_at=NOW + 30, reason="connect: refused")}
    assert adds(plan(gpu_pool(), [], [GPU], hosts, NOW)) == ["h2"]


def test_without_a_free_host_the_pool_says_which_are_set_aside() -> None:
    hosts = {h: HostRecord(failures=2, retry_at=NOW + 60) for h in ("h1", "h2", "h3")}
    [wait] = plan(gpu_pool(), [], [GPU], hosts, NOW).of("wait")
    assert wait.reason == "1 more node(s) wanted, no free host; set aside after failing: h1, h2, h3"


def test_backoff_doubles_per_failure_up_to_an_hour() -> None:
    assert [backoff(n, 30) for n in (1, 2, 3, 20)] == [30.0, 60.0, 120.0, 3600.0]


def test_demand_no_pool_can_hold_is_reported() -> None:
    assert unfit_demand([{"GPU": 2.0}, GPU], [gpu_pool()]) == [{"GPU": 2.0}]


def test_a_resource_the_pool_does_not_declare_is_one_it_lacks() -> None:
    assert (fits({"TPU": 1.0}, GPU), fits({"CPU": 64.0, "GPU": 1.0}, GPU)) == (False, True)


def test_nodes_for_packs_jobs_into_declared_cpus() -> None:
    assert nodes_for([{"CPU": 2.0}] * 5, {"CPU": 4.0}) == 3


@settings(max_examples=200, deadline=None)
@given(hs.integers(0, 3), hs.integers(0, 5),
       hs.lists(hs.sampled_from([UP, JOINING, DRAINING, DRAINED, DOWN]), max_size=5),
       hs.lists(hs.integers(0, 2), max_size=5), hs.integers(0, 25), hs.lists(hs.integers(0, 2000), max_size=5))
def test_any_pool_never_goes_above_max_below_min_or_stops_a_busy_node(
        low: int, extra: int, states: list[PoolNodeState], running: list[int], jobs: int, idle: list[int]) -> None:
    hosts = tuple(f"h{i}" for i in range(5))
    pool = gpu_pool(hosts=hosts, min=low, max=low + extra)
    nodes = [PoolNode(hosts[i], s, running=running[i] if i < len(running) else 0,
                      idle_since=NOW - idle[i] if i < len(idle) else None) for i, s in enumerate(states)]
    p = plan(pool, nodes, [GPU] * jobs, {}, NOW)
    live = [n for n in nodes if n.state in (UP, JOINING)]
    busy = {n.host for n in nodes if n.running}
    drained = {d.host for d in p.of("drain")} | {d.host for d in p.of("stop")}
    after = len(live) + len(p.of("add")) - len(p.of("drain"))
    assert after <= max(pool.max, len(live)), "above max"
    assert len(live) - len(p.of("drain")) >= min(pool.min, len(live)), "below min"
    assert not (drained & busy), "a node with a running job let go"
    assert len(p.of("add")) <= max(0, pool.max - len(live)), "over-provisioned"


# -- configuration -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["alice@10.0.0.7", "10.0.0.8:2222", "[::1]:23", "[::1]", "bob@h.example.com"])
def test_a_pool_host_reads_back_as_written(text: str) -> None:
    assert PoolHost.parse(text).text() == text


def test_a_pool_host_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="bad pool host 'a b': use \\[user@\\]host\\[:port\\]"):
        PoolHost.parse("a b")


def test_a_pool_reads_its_idle_timeout_as_a_duration() -> None:
    cfg = Config(nodes={"pools": [{"name": "gpu", "hosts": ["h1"], "idle_timeout": "10m"}]})
    assert cfg.nodes.pools[0].idle_timeout == 600.0


def test_a_pool_with_min_above_its_hosts_is_refused() -> None:
    with pytest.raises(ValidationError, match="pool gpu: min 2 but only 1 hosts"):
        Config(nodes={"pools": [{"name": "gpu", "hosts": ["h1"], "min": 2}]})


def test_two_pools_of_one_name_are_refused() -> None:
    with pytest.raises(ValidationError, match="two pools have the same name"):
        Config(nodes={"pools": [{"name": "a", "hosts": ["h1"]}, {"name": "a", "hosts": ["h2"]}]})


def test_a_hosts_file_adds_its_hosts_and_skips_comments(tmp_path: Path) -> None:
    listed = tmp_path / "gpu-hosts.txt"
    listed.write_text("# the GPU boxes\nalice@10.0.0.8\n\n10.0.0.9  # the new one\n")
    cfg = Config(nodes={"pools": [{"name": "gpu", "hosts": ["alice@10.0.0.7"], "hosts_file": listed, "max": 5}]})
    assert [h.text() for h in cfg.nodes.pools[0].host_list()] == ["alice@10.0.0.7", "alice@10.0.0.8", "10.0.0.9"]


def test_a_pools_ceiling_is_its_hosts_when_max_asks_for_more() -> None:
    cfg = Config(nodes={"pools": [{"name": "gpu", "hosts": ["h1", "h2"], "max": 9}]})
    assert cfg.nodes.pools[0].ceiling() == 2


# -- the autoscaler's loop, over fake nodes and a fake clock ------------------------------------------
class FakeNodes:
    """Nodes as PoolActions sees them: the test moves them (join done, job started, node lost)."""

    def __init__(self) -> None:
        self.nodes: dict[str, list[Any]] = {}  # name -> [state, running]
        self.added: list[str] = []
        self.stopped: list[str] = []

    async def refresh(self) -> None:
        """Nothing to ask: `nodes` is the truth."""

    def observe(self, name: str) -> tuple[PoolNodeState, int] | None:
        node = self.nodes.get(name)
        return None if node is None else (node[0], node[1])

    async def add(self, name: str, host: str, pool: Any) -> None:
        self.nodes[name] = [JOINING, 0]
        self.added.append(host)

    async def drain(self, name: str) -> None:
        """The provisioner's drain: done at once when no job runs there."""
        self.nodes[name][0] = DRAINING if self.nodes[name][1] else DRAINED

    async def stop(self, name: str) -> None:
        del self.nodes[name]
        self.stopped.append(name)

    def set(self, host: str, state: PoolNodeState, running: int = 0) -> None:
        self.nodes[node_name("gpu", host)] = [state, running]


class Kept:
    """The pools' memory as the database keeps it (tables.PoolHost rows), here in a dict."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], PoolHostRow] = {}
        self.saves = 0

    async def load(self) -> list[PoolHostRow]:
        return list(self.rows.values())

    async def save(self, rows: list[PoolHostRow]) -> None:
        self.saves += 1
        self.rows.update({(r.pool, r.host): r for r in rows})


class Loop:
    def __init__(self, demand: list[dict[str, float]] | None = None, kept: Kept | None = None, **pool: Any) -> None:
        self.t = NOW
        self.demand = demand or []
        self.events: list[PoolEvent] = []
        self.nodes = FakeNodes()
        self.kept = kept or Kept()
        self.pool = pool
        cfg = Config(nodes={"pools": [{"name": "gpu", "hosts": ["h1", "h2", "h3"], "max": 3, "idle_timeout": 600,
                                       "resources": {"GPU": 1}, **pool}]})
        self.scaler = Autoscaler(cfg.nodes.pools, self.nodes, lambda: self.demand, lambda: self.t, self.events.append,
                                 self.kept)

    def step(self) -> list[Any]:
        return asyncio.run(self.scaler.step())

    def successor(self) -> Loop:
        """A new leader: the same nodes and database, a clock that went on, no memory but what was kept."""
        new = Loop(self.demand, self.kept, **self.pool)
        new.nodes = new.scaler.actions = self.nodes
        new.t = self.t
        asyncio.run(new.scaler.restore())
        return new

    def said(self, kind: str) -> list[str]:
        return [e.reason for e in self.events if e.kind == kind]


def test_a_job_brings_a_node_up_and_it_leaves_once_idle_for_its_timeout() -> None:
    loop = Loop([GPU])
    loop.step()
    loop.nodes.set("h1", UP, running=1)
    loop.demand = []
    loop.step()
    loop.nodes.set("h1", UP, running=0)
    loop.step()
    loop.t += 600
    loop.step()  # drained
    loop.step()  # stopped: no job runs on it
    assert (loop.nodes.added, loop.nodes.stopped) == (["h1"], ["gpu-h1"])


def test_twenty_jobs_at_once_add_max_nodes_over_any_number_of_passes() -> None:
    loop = Loop([GPU] * 20)
    for _ in range(5):
        loop.step()
    assert loop.nodes.added == ["h1", "h2", "h3"]


def test_a_join_that_ends_is_an_event() -> None:
    loop = Loop([GPU])
    loop.step()
    loop.nodes.set("h1", UP)
    loop.step()
    assert loop.said("joined") == ["bootstrap done"]


def test_a_host_whose_bootstrap_failed_is_set_aside_and_another_is_used() -> None:
    loop = Loop([GPU])
    loop.step()
    loop.nodes.set("h1", FAILED)
    loop.step()
    assert (loop.nodes.added, loop.said("failed")) == (["h1", "h2"], ["bootstrap failed (1 in a row): set aside 30s"])


def test_a_host_set_aside_is_tried_again_after_its_backoff() -> None:
    loop = Loop([GPU], hosts=["h1"])
    loop.step()
    loop.nodes.set("h1", FAILED)
    loop.step()
    loop.t += 30
    loop.step()
    assert loop.nodes.added == ["h1", "h1"]


def test_a_pools_own_backoff_sets_a_host_aside_for_that_long() -> None:
    loop = Loop([GPU], hosts=["h1"], backoff="5s")
    loop.step()
    loop.nodes.set("h1", FAILED)
    loop.step()
    loop.t += 5
    loop.step()
    assert (loop.said("failed"), loop.nodes.added) == (["bootstrap failed (1 in a row): set aside 5s"], ["h1", "h1"])


def test_a_pools_backoff_doubles_from_its_own_base() -> None:
    assert [backoff(n, 5) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]


def test_a_lost_node_is_an_event_and_is_refilled_for_min() -> None:
    loop = Loop(min=1)
    loop.step()
    loop.nodes.set("h1", UP, running=1)
    loop.step()
    loop.nodes.set("h1", DOWN)
    loop.step()
    assert (loop.said("lost"), loop.nodes.added) == (
        ["its node is gone: set aside 30s, refilled from the other hosts as the pool needs"], ["h1", "h2"])


def test_a_reason_to_wait_is_said_once_while_it_holds() -> None:
    loop = Loop([GPU] * 5)
    loop.step()
    for host in ("h1", "h2", "h3"):
        loop.nodes.set(host, UP, running=1)
    for _ in range(3):
        loop.step()
    assert loop.said("wait") == ["at max 3: 5 waiting job(s) wait for room"]


def test_demand_no_pool_fits_is_said_not_acted_on() -> None:
    loop = Loop([{"GPU": 4.0}])
    loop.step()
    assert (loop.nodes.added, loop.said("unfit")) == ([], ["no pool's node could hold a job asking {'GPU': 4.0}"])


def test_a_node_name_keeps_only_a_node_names_characters() -> None:
    assert node_name("gpu", "alice@[::1]:23") == "gpu-alice----1--23"


# -- the daemon's actions: the provisioner's nodes seen as a pool's ------------------------------------
def test_a_pool_node_is_added_as_nodes_add_would_with_the_pools_shape() -> None:
    pool = Config(nodes={"pools": [{"name": "gpu", "hosts": ["alice@10.0.0.7:2222"], "key": "/k/id", "wheel_dir": "/w",
                                    "resources": {"CPU": 8, "GPU": 1, "fast_disk": 1}}]}).nodes.pools[0]
    req = join_request("gpu-alice-10.0.0.7-2222", PoolHost.parse(pool.hosts[0]), pool)
    assert (req.host, req.user, req.port, req.num_cpus, req.num_gpus, req.resources, req.key_file, req.wheel_dir) == (
        "10.0.0.7", "alice", 2222, 8, 1, {"fast_disk": 1.0}, "/k/id", "/w")


class Provisioned:
    """The provisioner as ProvisionedActions reads it: its node list and its operations."""

    def __init__(self, *views: NodeView, draining: str | None = None) -> None:
        self.views = list(views)
        self.ops = {draining: Operation("drain")} if draining else {}

    async def nodes(self) -> list[Any]:
        return self.views


def observed(*views: NodeView, draining: str | None = None) -> dict[str, Any]:
    actions = ProvisionedActions(Provisioned(*views, draining=draining))
    asyncio.run(actions.refresh())
    return {v.name: actions.observe(v.name) for v in views}


def test_a_drained_node_is_seen_as_drained() -> None:
    assert observed(NodeView(name="gpu-h1", state="DRAINED", managed=True)) == {"gpu-h1": (DRAINED, 0)}


def test_a_node_being_drained_is_seen_as_draining() -> None:
    seen = observed(NodeView(name="gpu-h1", state="DRAINING", managed=True, running_jobs=1), draining="gpu-h1")
    assert seen == {"gpu-h1": (DRAINING, 1)}


def test_a_node_whose_drain_failed_is_seen_as_drained() -> None:
    assert observed(NodeView(name="gpu-h1", state="DRAINING", managed=True)) == {"gpu-h1": (DRAINED, 0)}


def test_a_node_the_pool_did_not_add_is_not_seen() -> None:
    assert observed(NodeView(name="head", state="UP", managed=False, running_jobs=2)) == {"head": None}


def test_a_pools_view_shows_its_nodes_what_it_wants_and_its_last_decision() -> None:
    loop = Loop([GPU] * 2)
    loop.step()
    [view] = loop.scaler.views()
    assert (view.joining, view.desired, view.waiting_jobs, view.last) == (
        0, 2, 2, "add h2: 2 waiting job(s) need 2 more node(s)")  # joining counts from the next look


def test_a_pools_view_names_a_host_set_aside() -> None:
    loop = Loop([GPU], hosts=["h1"])
    loop.step()
    loop.nodes.set("h1", FAILED)
    loop.step()
    assert loop.scaler.views()[0].set_aside == {"h1": "bootstrap failed (1 in a row)"}


def test_a_new_leader_adds_again_a_host_whose_join_the_old_one_left_failed() -> None:
    """After a failover the half-joined node is FAILED (the provisioner's resume): not the host's
    fault, so the new leader adds the same host again (an idempotent join), and no duplicate."""
    loop = Loop([GPU])
    loop.step()
    loop.nodes.set("h1", FAILED)
    new = loop.successor()
    new.step()
    assert (loop.nodes.added, new.said("failed")) == (["h1", "h1"], [])


def test_a_new_leader_keeps_a_host_set_aside() -> None:
    loop = Loop([GPU])
    loop.step()
    loop.nodes.set("h1", FAILED)
    loop.step()  # h1 set aside, h2 added
    loop.nodes.set("h2", UP, running=1)
    loop.demand = [GPU]  # one more
    new = loop.successor()
    new.step()  # h1 still rests: h3 is the only free host
    assert loop.nodes.added == ["h1", "h2", "h3"]


def test_a_new_leader_keeps_the_idle_clock() -> None:
    loop = Loop()
    loop.nodes.set("h1", UP)
    loop.step()
    loop.t += 500
    new = loop.successor()
    new.t += 100
    new.step()
    assert new.nodes.nodes[node_name("gpu", "h1")][0] is DRAINED


def test_a_node_lost_during_the_failover_is_a_loss_to_the_new_leader() -> None:
    loop = Loop(min=1)
    loop.step()
    loop.nodes.set("h1", UP)
    loop.step()
    loop.nodes.set("h1", DOWN)
    new = loop.successor()
    new.step()
    assert (len(new.said("lost")), loop.nodes.added) == (1, ["h1", "h2"])


def test_a_pass_that_changes_no_memory_writes_nothing() -> None:
    loop = Loop()
    loop.nodes.set("h1", UP, running=1)
    loop.step()
    before = loop.kept.saves
    loop.step()
    assert loop.kept.saves == before


def test_the_pools_memory_reads_back_from_the_database_as_saved(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    rows = [PoolHostRow(pool="gpu", host="alice@10.0.0.7", state="UP", idle_since=NOW),
            PoolHostRow(pool="gpu", host="h2", state="FAILED", failures=2, retry_at=NOW + 60, reason="why")]
    kept = StoredPoolHosts(store)
    try:
        asyncio.run(kept.save(rows))
        asyncio.run(kept.save([rows[1].model_copy(update={"failures": 3})]))
        back = asyncio.run(kept.load())
    finally:
        store.close()
    assert sorted(back, key=lambda r: r.host) == [rows[0], rows[1].model_copy(update={"failures": 3})]


# -- a join the daemon was running when it stopped: the provisioner's resume ---------------------------
class Machines(NodeBackend):
    """The machines behind the nodes: what was stopped on them."""

    kind = "fake"

    def __init__(self) -> None:
        self.stopped: list[str] = []

    def join(self, target: Any, plan: Any, progress: Any, listed: Any) -> Any:
        raise AssertionError("resume never joins")

    def stop(self, target: Any, name: str, timeout: float = 60) -> int:
        self.stopped.append(name)
        return 2


class RayLists:
    connected = True

    def __init__(self, *names: str) -> None:
        self.names = names

    def listed(self, name: str, timeout: float) -> str | None:
        return f"ray-{name}" if name in self.names else None


def resumed(tmp_path: Path, *listed: str) -> tuple[dict[str, str], Machines]:
    """Two nodes left JOINING by a daemon that stopped; a new one resumes: their states, and what
    it stopped on the machines."""
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    machines = Machines()
    prov = Provisioner(Config().nodes, store, RayLists(*listed), lambda *a: None, tmp_path,  # type: ignore[arg-type]
                       lambda: None, machines)

    async def go() -> dict[str, str]:
        for name in ("gpu-h1", "gpu-h2"):
            await prov._set(name, None, NodeStatus.JOINING, "starting", host=name[4:], port=22)
        await prov.resume()
        await asyncio.gather(*prov._tasks)
        return {v.name: v.status for v in await store.read(lambda c: c.execute(select(Node.__table__)).all())}

    try:
        return asyncio.run(go()), machines
    finally:
        store.close()


def test_a_half_joined_node_that_ray_lists_is_up_after_a_restart(tmp_path: Path) -> None:
    states, _ = resumed(tmp_path, "gpu-h1")
    assert states == {"gpu-h1": "UP", "gpu-h2": "FAILED"}


def test_what_an_interrupted_bootstrap_started_is_stopped(tmp_path: Path) -> None:
    _, machines = resumed(tmp_path, "gpu-h1")
    assert machines.stopped == ["gpu-h2"]


# -- the head machines elsewhere reach: ray.node_ip ----------------------------------------------------
def test_ray_node_ip_is_an_address_not_a_name() -> None:
    with pytest.raises(ValidationError, match="IP address"):
        Config(ray={"node_ip": "head.example"})


def test_a_head_the_daemon_starts_listens_on_ray_node_ip(tmp_path: Path) -> None:
    cmd, _ = LocalHead(tmp_path).command(RayConfig(node_ip="10.1.2.3", include_dashboard=False), 6379, tmp_path)
    assert "--node-ip-address=10.1.2.3" in cmd


def test_a_machine_elsewhere_is_refused_while_the_head_is_on_loopback(tmp_path: Path) -> None:
    class OnLoopback:
        address = "127.0.0.1:6379"

    prov = Provisioner(Config().nodes, None, OnLoopback(), lambda *a: None, tmp_path, lambda: None)  # type: ignore[arg-type]
    with pytest.raises(StepFailed, match="set ray.node_ip"):
        prov.plan(NodeAdd(host="10.0.0.7"), "n1", None)  # type: ignore[arg-type]


def test_the_heads_tls_certificate_names_ray_node_ip(tmp_path: Path) -> None:
    tls.ensure_head(tmp_path)
    tls.ensure_head(tmp_path, ["10.1.2.3"])  # node_ip set later: the certificate is made again
    cert = x509.load_pem_x509_certificate((tmp_path / tls.CERT).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.1.2.3") in names.get_values_for_type(x509.IPAddress)

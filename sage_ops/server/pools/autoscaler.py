"""The loop that keeps each elastic pool as its rules say (policy.py): it observes the pool's nodes
and the queue's demand, plans, and acts through `PoolActions` (the provisioner's SSH bootstrap,
drain and removal in the daemon; a fake in the fast tests). It remembers what the rules need
between passes (when a node went idle, a host's failures in a row) and says every decision, and
every change of a reason not to act, as a pool event. What it remembers of each host is kept in a
`PoolMemoryStore` (the database in the daemon) after every pass that changed it, and read back
when a term begins, so a new leader neither forgets a host set aside nor restarts idle clocks, and
sees a node lost during the failover as lost."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ...cluster import PoolNodeView, PoolView
from ...config import PoolConfig
from ..storage.tables import PoolHost
from .policy import Decision, HostRecord, Need, Pool, PoolNode, PoolNodeState, backoff, fits, plan, unfit_demand

log = logging.getLogger(__name__)
INTERVAL = 5.0  # seconds between passes: a join takes far longer, an idle timeout is minutes


@dataclass(frozen=True)
class PoolEvent:
    time: float
    pool: str
    kind: str  # add, drain, stop, wait, unfit, joined, failed, lost
    reason: str
    host: str | None = None


class PoolActions(Protocol):
    """What the autoscaler may do to nodes, and what it may ask of them (by node name)."""

    async def refresh(self) -> None:
        """Look at the nodes again (once per pass; `observe` answers from what it saw)."""
        ...

    def observe(self, name: str) -> tuple[PoolNodeState, int] | None:
        """The node's state and the jobs running on it (None: no such node)."""
        ...

    async def add(self, name: str, host: str, pool: PoolConfig) -> None:
        """Start bootstrapping `host` as node `name` (returns once started; observe() follows it)."""
        ...

    async def drain(self, name: str) -> None: ...

    async def stop(self, name: str) -> None:
        """Take the drained node out of the cluster (its Ray stopped, its record kept as gone)."""
        ...


class PoolMemoryStore(Protocol):
    """Where what the loop remembers of each host outlives this daemon's term."""

    async def load(self) -> list[PoolHost]: ...

    async def save(self, rows: list[PoolHost]) -> None:
        """Each row replaces what was kept of its (pool, host)."""
        ...


def node_name(pool: str, host: str) -> str:
    """The node a pool makes of a host: `gpu-10.0.0.7` (a node name's characters only)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{pool}-{host}")[:63]


@dataclass
class PoolMemory:
    """What the rules need between passes, per pool."""

    idle_since: dict[str, float] = field(default_factory=dict)  # host -> when its node last had no job
    hosts: dict[str, HostRecord] = field(default_factory=dict)  # host -> its failures in a row
    last: dict[str, str] = field(default_factory=dict)  # kind -> the last reason said (waits are said once)
    states: dict[str, PoolNodeState] = field(default_factory=dict)  # host -> its node's state last pass
    seen: list[PoolNode] = field(default_factory=list)  # its nodes at the last pass
    desired: int = 0
    waiting: int = 0  # jobs in line a new node of it would hold
    said: str | None = None  # its last decision, or why it did not act


class Autoscaler:
    def __init__(self, pools: Sequence[PoolConfig], actions: PoolActions, demand: Callable[[], list[Need]],
                 now: Callable[[], float], said: Callable[[PoolEvent], None], kept: PoolMemoryStore) -> None:
        """`demand`: what waiting jobs ask that no open node has free (Scheduler.demand);
        `said`: where each event goes (stored, audited, shown); `kept`: where its memory of the
        hosts outlives this term. `now` is wall-clock time: kept times are read by another daemon."""
        self.pools = list(pools)
        self.actions = actions
        self.demand = demand
        self.now = now
        self.said = said
        self.kept = kept
        self.memory = {p.name: PoolMemory() for p in self.pools}
        self._saved: dict[tuple[str, str], PoolHost] = {}
        self._restored = False

    async def run(self, interval: float = INTERVAL) -> None:
        """A pass every `interval` seconds while this daemon leads (the caller cancels it); the
        first one reads back what the last term kept."""
        self._restored = False
        while True:
            try:
                if not self._restored:
                    await self.restore()
                await self.step()
            except Exception:  # noqa: BLE001 - the next pass tries again; the log says what broke
                log.exception("a pass of the pools' autoscaler failed")
            await asyncio.sleep(interval)

    async def restore(self) -> None:
        """Take up what was kept of the hosts (by this daemon's last term, or another's)."""
        rows = await self.kept.load()
        self.memory = {p.name: PoolMemory() for p in self.pools}
        for row in rows:
            memory = self.memory.get(row.pool)
            if memory is None:
                continue  # a pool no longer configured
            if row.state is not None and row.state != PoolNodeState.JOINING.value:
                # a join under way died with the last leader: the provisioner's resume made it UP
                # (Ray lists it) or FAILED (interrupted, not the host's fault): neither is a change
                memory.states[row.host] = PoolNodeState(row.state)
            if row.failures:
                memory.hosts[row.host] = HostRecord(row.failures, row.retry_at, row.reason)
            if row.idle_since is not None:
                memory.idle_since[row.host] = row.idle_since
        self._saved = {(r.pool, r.host): r for r in rows}
        self._restored = True

    async def _keep(self) -> None:
        """Save what changed of the hosts' memory since it was last saved."""
        changed = []
        for name, memory in self.memory.items():
            for host in {*memory.states, *memory.hosts, *memory.idle_since}:
                record = memory.hosts.get(host, HostRecord())
                state = memory.states.get(host)
                row = PoolHost(pool=name, host=host, state=state.value if state else None, failures=record.failures,
                               retry_at=record.retry_at, reason=record.reason, idle_since=memory.idle_since.get(host))
                if self._saved.get((name, host)) != row:
                    changed.append(row)
        if changed:
            await self.kept.save(changed)
            self._saved.update({(r.pool, r.host): r for r in changed})

    async def step(self) -> list[Decision]:
        """One pass over every pool: observe, plan, act. Returns what was done."""
        await self.actions.refresh()
        demand = self.demand()
        rules = [self._pool(p) for p in self.pools]
        done: list[Decision] = []
        for unfit in unfit_demand(demand, rules)[:1]:
            self._say(self.pools[0].name if self.pools else "-", "unfit",
                      f"no pool's node could hold a job asking {unfit}")
        for cfg, pool in zip(self.pools, rules):
            nodes = self._observe(cfg, pool)
            memory = self.memory[cfg.name]
            decided = plan(pool, nodes, demand, memory.hosts, self.now())
            memory.seen, memory.desired = nodes, decided.desired
            memory.waiting = sum(fits(d, pool.resources) for d in demand)
            for d in decided.decisions:
                if await self._act(cfg, d):
                    done.append(d)
        await self._keep()
        return done

    def views(self) -> list[PoolView]:
        """Each pool as the last pass saw it: its nodes, what it wants, what it last did."""
        now, out = self.now(), []
        for cfg in self.pools:
            memory = self.memory[cfg.name]
            nodes = [PoolNodeView(name=node_name(cfg.name, n.host), host=n.host, state=n.state.value,
                                  running_jobs=n.running,
                                  idle_s=round(now - n.idle_since, 1) if n.idle_since is not None else None)
                     for n in memory.seen]
            count = {s: sum(n.state is s for n in memory.seen) for s in PoolNodeState}
            resting = {h: r.reason or f"{r.failures} failure(s) in a row" for h, r in memory.hosts.items()
                       if r.retry_at > now}
            out.append(PoolView(
                name=cfg.name, hosts=[h.text() for h in cfg.host_list()], min=cfg.min, max=cfg.ceiling(),
                idle_timeout=cfg.idle_timeout, resources=dict(cfg.resources), up=count[PoolNodeState.UP],
                joining=count[PoolNodeState.JOINING],
                draining=count[PoolNodeState.DRAINING] + count[PoolNodeState.DRAINED],
                idle=sum(1 for n in memory.seen if n.state is PoolNodeState.UP and not n.running),
                desired=memory.desired, waiting_jobs=memory.waiting, nodes=nodes, last=memory.said,
                set_aside=resting))
        return out

    def _pool(self, cfg: PoolConfig) -> Pool:
        hosts = tuple(h.text() for h in cfg.host_list())
        return Pool(cfg.name, hosts, cfg.min, cfg.ceiling(), cfg.idle_timeout, dict(cfg.resources))

    def _observe(self, cfg: PoolConfig, pool: Pool) -> list[PoolNode]:
        """Each host's node as it is now; a join that ended or a node lost since the last pass is
        an event, and a failed join sets its host aside."""
        memory, now = self.memory[cfg.name], self.now()
        nodes = []
        for host in pool.hosts:
            seen = self.actions.observe(node_name(cfg.name, host))
            if seen is None:
                continue
            state, running = seen
            before = memory.states.get(host)
            memory.states[host] = state
            if before is PoolNodeState.JOINING and state is PoolNodeState.UP:
                memory.hosts.pop(host, None)
                self._say(cfg.name, "joined", "bootstrap done", host)
            elif before is PoolNodeState.JOINING and state is PoolNodeState.FAILED:
                pause = self._set_aside(memory, host, now, "bootstrap failed", cfg.backoff)
                self._say(cfg.name, "failed", f"bootstrap failed ({memory.hosts[host].failures} in a row): set "
                                              f"aside {pause:g}s", host)
            elif before is PoolNodeState.UP and state is PoolNodeState.DOWN:
                # the machine may be gone: others first
                pause = self._set_aside(memory, host, now, "node lost", cfg.backoff)
                self._say(cfg.name, "lost", f"its node is gone: set aside {pause:g}s, refilled from the other "
                                            "hosts as the pool needs", host)
            if running or state is not PoolNodeState.UP:
                memory.idle_since.pop(host, None)
            else:
                memory.idle_since.setdefault(host, now)
            nodes.append(PoolNode(host, state, running, memory.idle_since.get(host)))
        return nodes

    @staticmethod
    def _set_aside(memory: PoolMemory, host: str, now: float, why: str, base: float) -> float:
        """One more failure in a row for `host`: the seconds it now waits before it is tried again."""
        record = memory.hosts.setdefault(host, HostRecord())
        record.failures += 1
        pause = backoff(record.failures, base)
        record.retry_at = now + pause
        record.reason = f"{why} ({record.failures} in a row)"
        return pause

    async def _act(self, cfg: PoolConfig, d: Decision) -> bool:
        name = node_name(cfg.name, d.host) if d.host else ""
        try:
            if d.kind == "add":
                assert d.host is not None
                await self.actions.add(name, d.host, cfg)
                self.memory[cfg.name].states[d.host] = PoolNodeState.JOINING
            elif d.kind == "drain":
                await self.actions.drain(name)
            elif d.kind == "stop":
                await self.actions.stop(name)
                self.memory[cfg.name].idle_since.pop(d.host or "", None)
            else:  # wait: said when its reason changes, not every pass
                self._say(cfg.name, d.kind, d.reason)
                return False
        except Exception as exc:  # noqa: BLE001 - one node's trouble never stops the loop
            self._say(cfg.name, "error", f"{d.kind} failed: {str(exc).splitlines()[0][:300]}", d.host)
            return False
        self._say(cfg.name, d.kind, d.reason, d.host, once=False)
        return True

    def _say(self, pool: str, kind: str, reason: str, host: str | None = None, once: bool = True) -> None:
        memory = self.memory.get(pool)
        if once and memory is not None:
            key = f"{kind}:{host or ''}"
            if memory.last.get(key) == reason:
                return
            memory.last[key] = reason
        if memory is not None:
            memory.said = f"{kind}{' ' + host if host else ''}: {reason}"
        self.said(PoolEvent(self.now(), pool, kind, reason, host))

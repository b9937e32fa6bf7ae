"""What an elastic pool should do now, as a pure function of what it has and what is asked of it
(the rules of Ray's autoscaler and dstack's fleets, tested in milliseconds): add nodes for the
demand that fits its machines and no up node can take, up to `max`, counting the joins under way
so a burst never over-provisions; keep `min`; let an idle node go after `idle_timeout`, never one
that runs a job, never below `min`; refill after a loss; set a failing host aside with a backoff.
Every decision carries its reason, and so does every decision not to act."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

EPS = 1e-9
BACKOFF_CAP = 3600.0
Need = Mapping[str, float]


class PoolNodeState(str, Enum):
    JOINING = "JOINING"  # being bootstrapped
    UP = "UP"
    DRAINING = "DRAINING"  # nothing new placed; its Ray is stopped once its jobs are done
    DRAINED = "DRAINED"  # its Ray stopped, or its drain can go no further (the machine is gone): remove it
    DOWN = "DOWN"  # lost (its Ray died, the machine went away): its host may be used again
    FAILED = "FAILED"  # its bootstrap failed: the host waits out its backoff


@dataclass
class PoolNode:
    """A machine of the pool as a node, as the daemon last saw it."""

    host: str
    state: PoolNodeState
    running: int = 0  # jobs running on it
    idle_since: float | None = None  # when its last job ended (None: it runs one, or never ran)
    since: float = 0.0  # when it entered its state


@dataclass
class HostRecord:
    """A host's bootstrap failures in a row, and when it may be tried again."""

    failures: int = 0
    retry_at: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class Pool:
    name: str
    hosts: tuple[str, ...]
    min: int
    max: int
    idle_timeout: float
    resources: Mapping[str, float]  # what one node offers (keys it does not name: unknown, CPU aside)


Kind = Literal["add", "drain", "stop", "wait", "unfit"]


@dataclass(frozen=True)
class Decision:
    kind: Kind
    reason: str
    host: str | None = None


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)
    desired: int = 0  # nodes it should have (up or joining)

    def of(self, kind: Kind) -> list[Decision]:
        return [d for d in self.decisions if d.kind == kind]


def fits(need: Need, offer: Mapping[str, float]) -> bool:
    """Could one node of the pool hold `need`? A resource the pool does not declare is one it does
    not have, except CPU and memory, which every machine has (how much is Ray's to say)."""
    for k, v in need.items():
        if v <= EPS:
            continue
        if k in offer:
            if offer[k] + EPS < v:
                return False
        elif k not in ("CPU", "memory"):
            return False
    return True


def nodes_for(demand: Sequence[Need], offer: Mapping[str, float]) -> int:
    """Nodes of shape `offer` that hold `demand` (first fit, largest first: Ray's bin packing). A
    node that declares no CPU holds one job (its size is unknown until it is up)."""
    bins: list[dict[str, float]] = []
    for need in sorted(demand, key=lambda n: -sum(n.values())):
        for room in bins:
            if room.get("_jobs", 0) < 1 - EPS and all(room.get(k, math.inf) + EPS >= v for k, v in need.items()
                                                      if k in offer):
                _take(room, need, offer)
                break
        else:
            room = {**offer, "_jobs": 0.0}
            _take(room, need, offer)
            bins.append(room)
    return len(bins)


def _take(room: dict[str, float], need: Need, offer: Mapping[str, float]) -> None:
    for k, v in need.items():
        if k in offer:
            room[k] = room.get(k, 0.0) - v
    if "CPU" not in offer:
        room["_jobs"] = room.get("_jobs", 0.0) + 1  # an unknown size: one job per node


def backoff(failures: int, base: float) -> float:
    """Seconds a host is set aside after `failures` in a row: the pool's `backoff`, doubled each time."""
    return min(BACKOFF_CAP, base * 2 ** max(0, failures - 1))


def plan(pool: Pool, nodes: Sequence[PoolNode], demand: Sequence[Need], hosts: Mapping[str, HostRecord],
         now: float) -> Plan:
    """What `pool` should do now. `demand`: what each waiting job asks that no up node can give
    (whatever pool); those that fit no node of this pool are reported as `unfit` by the caller
    (`unfit_demand`), not here."""
    out = Plan()
    mine = [n for n in nodes if n.state in (PoolNodeState.JOINING, PoolNodeState.UP)]
    joining = [n for n in mine if n.state is PoolNodeState.JOINING]
    wanted = [d for d in demand if fits(d, pool.resources)]
    # capacity already on its way counts against the demand: a burst adds what it needs, once
    need_nodes = max(0, nodes_for(wanted, pool.resources) - len(joining)) if wanted else 0
    busy = [n for n in mine if n.state is PoolNodeState.UP and n.running > 0]
    out.desired = min(pool.max, max(pool.min, len(busy) + len(joining) + need_nodes,
                                    len(mine) if wanted else 0))
    adds = out.desired - len(mine)
    if adds > 0:
        used = {n.host for n in nodes if n.state is not PoolNodeState.DOWN and n.state is not PoolNodeState.FAILED}
        free = [h for h in pool.hosts if h not in used and hosts.get(h, HostRecord()).retry_at <= now]
        why = (f"{len(wanted)} waiting job(s) need {need_nodes} more node(s)" if need_nodes
               else f"min {pool.min}: {len(mine)} up or joining")
        for host in free[:adds]:
            out.decisions.append(Decision("add", why, host))
        if len(free) < adds:
            resting = [h for h in pool.hosts if hosts.get(h, HostRecord()).retry_at > now]
            detail = f"; set aside after failing: {', '.join(resting)}" if resting else ""
            out.decisions.append(Decision("wait", f"{adds - len(free)} more node(s) wanted, no free host{detail}"))
    elif wanted and len(mine) >= pool.max:
        out.decisions.append(Decision("wait", f"at max {pool.max}: {len(wanted)} waiting job(s) wait for room"))
    # let idle nodes go, never below min and never while its nodes are wanted
    keep = max(pool.min, out.desired)
    idle = sorted((n for n in mine if n.state is PoolNodeState.UP and n.running == 0 and n.idle_since is not None
                   and now - n.idle_since >= pool.idle_timeout), key=lambda n: n.idle_since or 0.0)
    for n in idle[:max(0, len(mine) - keep)]:
        out.decisions.append(Decision("drain", f"idle for {now - (n.idle_since or now):.0f}s "
                                               f"(idle_timeout {pool.idle_timeout:g}s)", n.host))
    for n in nodes:
        if n.state is PoolNodeState.DRAINED and n.running == 0:
            out.decisions.append(Decision("stop", "drained: no job runs on it", n.host))
    return out


def unfit_demand(demand: Sequence[Need], pools: Sequence[Pool]) -> list[Need]:
    """What no pool could ever hold: said, never acted on."""
    return [d for d in demand if not any(fits(d, p.resources) for p in pools)]

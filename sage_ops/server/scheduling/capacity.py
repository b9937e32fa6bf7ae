"""What the cluster can hold: ever (admission) and now (dispatch), from Ray's node totals minus
what this daemon has dispatched. Kept apart from the queue so the rules live in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from ...plaintext import binary_size
from ..pools.policy import fits

PREFETCH = "<prefetch>"  # a dispatched job not charged to a node: it waits in Ray's queue
SHORT_JOB = 0.2  # seconds: below this recent average runtime, prefetching pays
PREFETCH_SECONDS = 0.2  # with executors: short jobs queued beyond free CPUs, up to this much work per CPU
PREFETCH_MAX = 1000
Need = dict[str, float]


class NodeSource(Protocol):
    def node_totals(self, open_only: bool = False) -> list[tuple[str, dict[str, float]]]: ...


class Capacity:
    def __init__(self, nodes: NodeSource, prefetch: int, pools: Sequence[tuple[str, Mapping[str, float]]] = (),
                 executors: bool = False) -> None:
        """`pools`: (name, what one node offers) of the elastic pools, which may add a node for a job
        no node up now could hold. `executors`: short jobs may run on long-lived executors
        (executor_ok), which take a deeper prefetch (_prefetch_ok)."""
        self.nodes = nodes
        self.prefetch = prefetch
        self.executors = executors
        self.pools = list(pools)
        self.used: dict[str, Need] = {}
        self.prefetched = 0
        self.recent_runtime = 1.0  # EWMA of attempt runtimes, seconds (starts "long": no prefetch)

    def never_fits(self, need: Need, nodes: list[tuple[str, dict[str, float]]] | None = None) -> str | None:
        """The rejection reason if no alive node could ever hold `need`, else None."""
        nodes = self.nodes.node_totals() if nodes is None else nodes
        if any(all(total.get(k, 0) + 1e-9 >= v for k, v in need.items()) for _, total in nodes):
            return None
        if any(fits(need, offer) for _, offer in self.pools):
            return None  # a pool can add a node that holds it
        biggest = max(nodes, key=lambda n: n[1].get("CPU", 0))[1] if nodes else {}
        have = {k: biggest.get(k, 0) for k in need}
        return f"no node can ever hold {fmt(need)} (largest node has {fmt(have)})"

    def charge(self, need: Need, admits: Callable[[str], bool] | None = None) -> str | None:
        """Reserve `need` on the first node that can start it now (and `admits` it: a backfill);
        else, for short jobs outside a backfill, a prefetch slot; None if neither."""
        for node, total in self.nodes.node_totals(open_only=True):
            used = self.used.setdefault(node, {})
            if (all(total.get(k, 0) - used.get(k, 0) + 1e-9 >= v for k, v in need.items())
                    and (admits is None or admits(node))):
                for k, v in need.items():
                    used[k] = used.get(k, 0) + v
                return node
        if admits is None and self._prefetch_ok(need):
            self.prefetched += 1
            return PREFETCH
        return None

    def _prefetch_ok(self, need: Need) -> bool:
        """Short jobs may queue a few deep in Ray, so its worker leases are reused instead of
        renegotiated per job (~10 ms each). Only while recent jobs ran short, so the most a
        higher-priority arrival waits for is a few short starts; long jobs keep strict order. Only
        jobs of at most one CPU and nothing else: a bigger one is reserved its room (and may be
        backfilled around or preempt for it) instead of waiting in Ray's queue where neither can be."""
        return (self.prefetch > 0 and self._short_and_plain(need) and 0 < need.get("CPU", 0) <= 1
                and self.prefetched < max(self.prefetch, self._deep_prefetch()))

    def _short_and_plain(self, need: Need) -> bool:
        """Recent jobs ran short, and this one asks only for what the daemon counts itself."""
        return self.recent_runtime <= SHORT_JOB and set(need) <= {"CPU", "memory"}

    def _deep_prefetch(self) -> int:
        """With executors, a prefetched job costs no lease and waits only behind short jobs: as
        many as make PREFETCH_SECONDS of work per open CPU (so an arrival of higher priority
        waits about that long), which lets the executors take and report jobs in batches."""
        if not self.executors:
            return 0
        cpus = sum(total.get("CPU", 0) for _, total in self.nodes.node_totals(open_only=True))
        return min(PREFETCH_MAX, int(PREFETCH_SECONDS * cpus / max(self.recent_runtime, 1e-3)))

    def executor_ok(self, need: Need) -> bool:
        """Whether a job runs on a long-lived executor (backend/executor.py)
        instead of a Ray task of its own: only while recent jobs ran short (a task's lease and
        calls cost several times a short job), and only jobs of CPU and memory, which the daemon
        counts itself (Ray does not see what an executor runs). Long jobs keep their own task,
        whose resources Ray sees."""
        return self.executors and self._short_and_plain(need)

    def release(self, node: str, need: Need) -> None:
        if node == PREFETCH:
            self.prefetched = max(0, self.prefetched - 1)
            return
        used = self.used.get(node, {})
        for k, v in need.items():
            used[k] = max(0.0, used.get(k, 0) - v)

    def observe_runtime(self, seconds: float) -> None:
        self.recent_runtime = 0.8 * self.recent_runtime + 0.2 * max(0.0, seconds)


def fmt(need: Need) -> str:
    parts = []
    for k, v in need.items():
        parts.append(f"memory={binary_size(v)}" if k == "memory" else f"{k}={v:g}")
    return ", ".join(parts) or "nothing"

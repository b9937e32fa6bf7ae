"""Tenants' quotas and fair share, for the scheduler.

`Tally` is a dict of jobs (the queued ones, the dispatched ones) that keeps each tenant's totals
as jobs come and go, so a quota check is a lookup, never a scan. `FairQueue` holds one ready
heap per tenant (highest priority first, FIFO within a priority) and offers the tenants in fair
order: the one using the fewest CPUs per unit of weight first, so on a contended cluster each
freed slot goes to the least-served tenant and their shares converge to their weights.

Two defaults keep quotas meaningful: a job asks for at least MIN_CPU (so `--max-cpu` bounds how
many jobs run, and zero-CPU jobs cannot pile up past Ray's accounting), and a tenant without its
own `max_queued` holds at most its even share of `max_jobs` (so no tenant fills the global queue).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from ...access import Quotas
from ...schemas import JobSpec
from ...views import PendingCode

V = TypeVar("V")
EPS = 1e-9
MIN_CPU = 0.25  # the least CPU a job is given and counted for (Slurm counts a whole CPU per task)


def with_min_cpu(spec: JobSpec) -> JobSpec:
    """`spec` asking for at least MIN_CPU: what Ray reserves, capacity charges and quotas count."""
    if spec.resources.cpu >= MIN_CPU:
        return spec
    return spec.model_copy(update={"resources": spec.resources.model_copy(update={"cpu": MIN_CPU})})


def share_of_queue(max_jobs: int, tenants: int) -> int | None:
    """Active jobs a tenant without its own `max_queued` may hold: `max_jobs` split evenly between
    the tenants, so each can always submit; all of it (no limit) when there is only one."""
    return None if tenants <= 1 else max(1, max_jobs // tenants)


@dataclass
class Use:
    jobs: int = 0
    cpu: float = 0.0
    gpu: float = 0.0


class Tally(dict[str, V], Generic[V]):
    """Jobs by id (values have `.tenant` and `.need`), with per-tenant totals."""

    def __init__(self) -> None:
        super().__init__()
        self.use: defaultdict[str | None, Use] = defaultdict(Use)

    def _count(self, job: Any, sign: int) -> None:
        use = self.use[job.tenant]
        need = job.need
        use.jobs += sign
        use.cpu += sign * max(need.get("CPU", 0.0), MIN_CPU)  # jobs stored before MIN_CPU count as it too
        use.gpu += sign * need.get("GPU", 0.0)

    def __setitem__(self, key: str, value: V) -> None:
        old = dict.get(self, key)
        if old is not None:
            self._count(old, -1)
        super().__setitem__(key, value)
        self._count(value, 1)

    def __delitem__(self, key: str) -> None:
        self._count(self[key], -1)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        if key in self:
            value = super().pop(key)
            self._count(value, -1)
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def clear(self) -> None:
        super().clear()
        self.use.clear()


def over_quota(tenant: str | None, quotas: Quotas | None, running: Use, cpu: float,
               gpu: float) -> tuple[PendingCode, str] | None:
    """Why a job needing `cpu`/`gpu` cannot start now for its tenant's quota (its reason code and
    words), or None."""
    if quotas is None:
        return None
    cpu = max(cpu, MIN_CPU)
    if quotas.max_running is not None and running.jobs + 1 > quotas.max_running:
        return (PendingCode.QUOTA_MAX_RUNNING,
                f"quota: tenant {tenant} runs {running.jobs} jobs (max-running {quotas.max_running})")
    if quotas.max_cpu is not None and running.cpu + cpu > quotas.max_cpu + EPS:
        return (PendingCode.QUOTA_MAX_CPU,
                f"quota: tenant {tenant} uses {running.cpu:g} of {quotas.max_cpu:g} CPUs (max-cpu)")
    if quotas.max_gpu is not None and running.gpu + gpu > quotas.max_gpu + EPS:
        return (PendingCode.QUOTA_MAX_GPU,
                f"quota: tenant {tenant} uses {running.gpu:g} of {quotas.max_gpu:g} GPUs (max-gpu)")
    return None


def fair_shares(total_cpu: float, running: Tally[Any], queued: Tally[Any],
                quotas: dict[str, Quotas]) -> dict[str | None, float]:
    """Each tenant with work (running or waiting) and its fair share of the cluster's CPUs: the
    total split by weight (a job without a tenant counts as one tenant of weight 1)."""
    active = {t for tally in (running, queued) for t, use in tally.use.items() if use.jobs > 0}
    weights = {t: quotas[t].weight if t in quotas else 1.0 for t in active}
    whole = sum(weights.values()) or 1.0
    return {t: total_cpu * w / whole for t, w in weights.items()}


def never_within(tenant: str | None, quotas: Quotas | None, cpu: float, gpu: float) -> str | None:
    """A job bigger than its tenant may ever use is refused at once, not queued forever."""
    if quotas is None:
        return None
    if quotas.max_cpu is not None and cpu > quotas.max_cpu + EPS:
        return f"needs {cpu:g} CPUs; tenant {tenant} may use at most {quotas.max_cpu:g} (max-cpu)"
    if quotas.max_gpu is not None and gpu > quotas.max_gpu + EPS:
        return f"needs {gpu:g} GPUs; tenant {tenant} may use at most {quotas.max_gpu:g} (max-gpu)"
    if quotas.max_running == 0:
        return f"tenant {tenant} may not run jobs (max-running 0)"
    return None


class FairQueue:
    def __init__(self) -> None:
        self.heaps: dict[str | None, list[tuple[int, int, str]]] = {}

    def push(self, tenant: str | None, priority: int, seq: int, job_id: str) -> None:
        heapq.heappush(self.heaps.setdefault(tenant, []), (-priority, seq, job_id))

    def __len__(self) -> int:
        return sum(len(h) for h in self.heaps.values())

    def order(self, running: Tally[Any], quotas: dict[str, Quotas],
              skip: set[str | None]) -> str | None | Literal[False]:
        """The tenant whose head job goes next (False: none). Ties (equal shares) go by the head
        jobs' priority and age, as with one queue."""
        best: tuple[float, tuple[int, int, str]] | None = None
        chosen: str | None | Literal[False] = False
        for tenant, heap in self.heaps.items():
            if not heap or tenant in skip:
                continue
            if len(self.heaps) == 1:
                return tenant
            use = running.use.get(tenant)
            weight = quotas[tenant].weight if tenant in quotas else 1.0
            share = ((use.cpu + 0.001 * use.jobs) / weight) if use else 0.0
            key = (share, heap[0])
            if best is None or key < best:
                best, chosen = key, tenant
        return chosen

"""The daemon's figures: a series sampled every few seconds (throughput, queue depth, running
jobs, per-node resource use) kept in the store with roll-ups so a week stays small, served at
`/v1/metrics/series`; and the current values in Prometheus text format at `/metrics`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, insert, select

from ...cluster import PoolView
from ...config import MetricsConfig
from ...lifecycle import JobStatus
from ...telemetry import MetricPoint, MetricsSeries, NodeUsage
from ..storage.job_counts import counts_by_status
from ..storage.tables import MetricSample

if TYPE_CHECKING:
    from ..backend.ray_backend import NodeInfo, RayBackend
    from ..scheduling.scheduler import Scheduler
    from ..storage.store import Store
    from .leadership import Leadership

log = logging.getLogger(__name__)
COUNTERS = ("submitted", "started", "finished", "failed")
GAUGES = ("queue_depth", "running", *NodeUsage.model_fields)
T = MetricSample.__table__


def levels(cfg: MetricsConfig) -> list[tuple[float, float]]:
    """(step, kept for) of each level: the sampling interval for two hours, minutes for two
    days, ten minutes for `retention_days`. A week at 5 s is ~5,000 rows, not 120,000."""
    return [(cfg.interval, 2 * 3600), (60.0, 2 * 86400), (600.0, cfg.retention_days * 86400)]


def usage(nodes: Sequence[NodeInfo]) -> tuple[NodeUsage, dict[str, NodeUsage]]:
    """Resources Ray's tasks hold, per node and in all (total minus available)."""
    per: dict[str, NodeUsage] = {}
    for n in nodes:
        def used(key: str, n: NodeInfo = n) -> float:
            return max(0.0, n.total.get(key, 0.0) - n.available.get(key, n.total.get(key, 0.0)))

        per[n.name] = NodeUsage(cpu_used=used("CPU"), cpu_total=n.total.get("CPU", 0.0), memory_used=used("memory"),
                                memory_total=n.total.get("memory", 0.0), gpu_used=used("GPU"),
                                gpu_total=n.total.get("GPU", 0.0))
    cluster = NodeUsage(**{k: sum(getattr(u, k) for u in per.values()) for k in NodeUsage.model_fields})
    return cluster, per


def roll_up(points: Sequence[MetricPoint], start: float, step: float) -> MetricPoint:
    """One coarser point: counters add up, gauges average (weighted by each point's length)."""
    weight = sum(p.seconds for p in points) or 1.0
    values: dict[str, Any] = {k: sum(getattr(p, k) for p in points) for k in COUNTERS}
    values.update({k: sum(getattr(p, k) * p.seconds for p in points) / weight for k in GAUGES})
    names = {name for p in points for name in p.nodes}
    nodes = {}
    for name in sorted(names):
        have = [(p.nodes[name], p.seconds) for p in points if name in p.nodes]
        w = sum(s for _, s in have) or 1.0
        nodes[name] = NodeUsage(**{k: sum(getattr(u, k) * s for u, s in have) / w for k in NodeUsage.model_fields})
    return MetricPoint(time=datetime.fromtimestamp(start, timezone.utc), seconds=step, nodes=nodes, **values)


def series(conn: Connection, cfg: MetricsConfig, window: float, now: float) -> MetricsSeries:
    """The finest level that still covers `window`, from `now - window` on."""
    tiers = levels(cfg)
    level = next((i for i, (_, keep) in enumerate(tiers) if keep >= window), len(tiers) - 1)
    rows = conn.execute(select(T.c.data).where(T.c.level == level, T.c.time >= now - window)
                        .order_by(T.c.time)).scalars()
    return MetricsSeries(window_s=window, step_s=tiers[level][0],
                         points=[MetricPoint.model_validate_json(r) for r in rows])


class Rollups:
    """Writes a sampled point and its roll-ups, and prunes each level past its retention."""

    def __init__(self, cfg: MetricsConfig) -> None:
        self.tiers = levels(cfg)
        self._rolled: dict[int, float] = {}  # level -> start of the last bucket written
        self._pruned = 0.0

    def record(self, conn: Connection, point: MetricPoint, now: float) -> None:
        conn.execute(insert(T), [{"level": 0, "time": point.time.timestamp(), "data": point.model_dump_json()}])
        for level in range(1, len(self.tiers)):
            step = self.tiers[level][0]
            start = (now // step - 1) * step  # the last bucket that is complete now
            if level not in self._rolled:
                self._rolled[level] = conn.execute(select(func.max(T.c.time)).where(T.c.level == level)).scalar() or 0
            if start <= self._rolled[level]:
                continue
            rows = conn.execute(select(T.c.data).where(T.c.level == level - 1, T.c.time >= start,
                                                       T.c.time < start + step)).scalars().all()
            if rows:
                up = roll_up([MetricPoint.model_validate_json(r) for r in rows], start, step)
                conn.execute(insert(T), [{"level": level, "time": start, "data": up.model_dump_json()}])
            self._rolled[level] = start
        if now - self._pruned > 60:
            self._pruned = now
            for level, (_, keep) in enumerate(self.tiers):
                conn.execute(delete(T).where(T.c.level == level, T.c.time < now - keep))


class Sampler:
    """Samples the leader's scheduler every `interval` seconds and writes the point, its
    roll-ups and the pruning in one transaction. A standby samples nothing (the leader does)."""

    def __init__(self, cfg: MetricsConfig, scheduler: Scheduler, ray: RayBackend, leadership: Leadership,
                 store: Store) -> None:
        self.cfg = cfg
        self.scheduler = scheduler
        self.ray = ray
        self.leadership = leadership
        self.store = store
        self.rollups = Rollups(cfg)
        self._leading = False
        self._base: dict[str, int] = {}
        self._last = 0.0

    def counters(self, sched: Scheduler) -> dict[str, int]:
        ended = sched.counters.ended
        return {"submitted": sched.counters.submitted, "started": sched.counters.started,
                "finished": ended.get(JobStatus.COMPLETED.value, 0), "failed": ended.get(JobStatus.FAILED.value, 0)}

    def sample(self, now: float) -> MetricPoint | None:
        """The point of the interval that ends now (None for the first call: no baseline yet)."""
        sched = self.scheduler
        counts = self.counters(sched)
        if not self._leading:  # first call, or a new term as leader: start counting afresh
            self._leading, self._base, self._last = True, counts, now
            return None
        nodes = self.ray.node_infos() if self.ray.connected else []
        cluster, per = usage(nodes)
        running = sum(1 for d in sched.state.dispatched.values() if d.started)
        point = MetricPoint(time=datetime.fromtimestamp(self._last, timezone.utc), seconds=round(now - self._last, 3),
                            queue_depth=sched.queue_depth(), running=running, nodes=per,
                            **{k: counts[k] - self._base[k] for k in COUNTERS}, **cluster.model_dump())
        self._base, self._last = counts, now
        return point

    async def run(self) -> None:
        interval = self.cfg.interval
        while True:
            await asyncio.sleep(interval - time.time() % interval)  # on the clock's boundaries
            try:
                if self.leadership.role != "leader":
                    self._leading = False
                    continue
                now = time.time()
                point = self.sample(now)
                if point is not None:
                    await self.store.write(lambda c, p=point, t=now: self.rollups.record(c, p, t))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a missed sample is not worth the daemon
                log.warning("metrics sample failed: %s", exc)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        shown = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{shown}}} {value:g}" if shown else f"{name} {value:g}")
    return lines


async def prometheus_text(sched: Scheduler, store: Store, backend: RayBackend, leadership: Leadership,
                          pools: Sequence[PoolView] = ()) -> str:
    """`pools`: the elastic pools as the autoscaler last saw them (desired, up, joining, idle)."""
    counts = await store.read(counts_by_status)
    ray = backend.health()
    out: list[str] = []
    out += _family("sage_ops_up", "gauge", "1 while this daemon answers; role in the label",
                   [({"role": leadership.role}, 1)])
    out += _family("sage_ops_jobs", "gauge", "jobs in the database by status",
                   [({"status": s.value}, counts.get(s.value, 0)) for s in JobStatus])
    out += _family("sage_ops_queue_depth", "gauge", "jobs waiting to run (pending)", [({}, sched.queue_depth())])
    out += _family("sage_ops_dispatched_total", "counter", "attempts handed to Ray since the daemon started",
                   [({}, sched.counters.decisions)])
    out += _family("sage_ops_finished_total", "counter", "jobs that ended since the daemon started, by status",
                   [({"status": s}, n) for s, n in sorted(sched.counters.ended.items())])
    out += _family("sage_ops_scheduler_seconds_total", "counter", "time spent choosing what to run",
                   [({}, round(sched.counters.decision_seconds, 6))])
    out += _family("sage_ops_cluster_resource", "gauge", "Ray cluster resources (total and available)",
                   [({"resource": r, "state": state}, v) for state, res in (("total", ray.resources),
                                                                            ("available", ray.available))
                    for r, v in sorted(res.items()) if r in ("CPU", "GPU", "memory")])
    out += _family("sage_ops_cluster_nodes", "gauge", "Ray nodes alive", [({}, ray.nodes)])
    out += _family("sage_ops_submitted_total", "counter", "jobs accepted since the daemon started",
                   [({}, sched.counters.submitted)])
    out += _family("sage_ops_started_total", "counter", "attempts that started running since the daemon started",
                   [({}, sched.counters.started)])
    out += _family("sage_ops_dispatcher_refused_total", "counter", "calls the Ray dispatcher actor refused "
                   "(no daemon key, or not the capability of a dispatched attempt)", [({}, sched.counters.refused)])
    _, per = usage(backend.node_infos() if backend.connected else [])
    out += _family("sage_ops_node_resource", "gauge", "resources of each Ray node: total and in use by tasks",
                   [({"node": name, "resource": r, "state": state}, getattr(u, f"{r}_{state}"))
                    for name, u in sorted(per.items()) for r in ("cpu", "memory", "gpu")
                    for state in ("total", "used")])
    tenants = sorted(sched.state.quotas)
    for key, help_text in (("running_jobs", "jobs a tenant runs"), ("queued_jobs", "jobs a tenant has waiting"),
                           ("cpu_in_use", "CPUs a tenant's running jobs hold")):
        out += _family(f"sage_ops_tenant_{key}", "gauge", help_text,
                       [({"tenant": t}, sched.usage(t)[key]) for t in tenants])
    for key, help_text in (("desired", "nodes an elastic pool wants"), ("up", "a pool's nodes up"),
                           ("joining", "a pool's nodes being bootstrapped"), ("idle", "a pool's nodes without a job")):
        out += _family(f"sage_ops_pool_{key}", "gauge", help_text, [({"pool": p.name}, getattr(p, key)) for p in pools])
    return "\n".join(out) + "\n"

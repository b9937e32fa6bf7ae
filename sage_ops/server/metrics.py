"""The daemon's figures in Prometheus text format (`GET /metrics`), read from what the daemon
already holds: job counts by status, the queue, dispatches and endings since start, the
cluster's resources, and each tenant's use. (Sampled series with retention come next.)"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..lifecycle import JobStatus
from . import store as st

if TYPE_CHECKING:
    from .daemon import Daemon

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        shown = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{shown}}} {value:g}" if shown else f"{name} {value:g}")
    return lines


async def prometheus_text(daemon: Daemon) -> str:
    sched = daemon.scheduler
    counts = await daemon.store.read(st.counts_by_status)
    ray = daemon.backend.health()
    out: list[str] = []
    out += _family("sage_ops_up", "gauge", "1 while this daemon answers; role in the label",
                   [({"role": daemon.leadership.role}, 1)])
    out += _family("sage_ops_jobs", "gauge", "jobs in the database by status",
                   [({"status": s.value}, counts.get(s.value, 0)) for s in JobStatus])
    out += _family("sage_ops_queue_depth", "gauge", "jobs waiting to run (pending)", [({}, sched.queue_depth())])
    out += _family("sage_ops_dispatched_total", "counter", "attempts handed to Ray since the daemon started",
                   [({}, sched.decisions)])
    out += _family("sage_ops_finished_total", "counter", "jobs that ended since the daemon started, by status",
                   [({"status": s}, n) for s, n in sorted(sched.ended_counts.items())])
    out += _family("sage_ops_scheduler_seconds_total", "counter", "time spent choosing what to run",
                   [({}, round(sched.decision_seconds, 6))])
    out += _family("sage_ops_cluster_resource", "gauge", "Ray cluster resources (total and available)",
                   [({"resource": r, "state": state}, v) for state, res in (("total", ray.resources),
                                                                            ("available", ray.available))
                    for r, v in sorted(res.items()) if r in ("CPU", "GPU", "memory")])
    out += _family("sage_ops_cluster_nodes", "gauge", "Ray nodes alive", [({}, ray.nodes)])
    tenants = sorted(sched.quotas)
    for key, help_text in (("running_jobs", "jobs a tenant runs"), ("queued_jobs", "jobs a tenant has waiting"),
                           ("cpu_in_use", "CPUs a tenant's running jobs hold")):
        out += _family(f"sage_ops_tenant_{key}", "gauge", help_text,
                       [({"tenant": t}, sched.usage(t)[key]) for t in tenants])
    return "\n".join(out) + "\n"

"""What the daemon reports about itself and the cluster: health, job counts, and the sampled
metrics series (server/services/metrics.py samples it; `stats --chart` and the TUI draw it). API shapes,
like schemas.py, views.py and bodies.py (jobs) and cluster.py (machines); no heavy imports here."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from .views import View


class Stats(View):
    total_jobs: int
    active_jobs: int
    by_status: dict[str, int]
    queue_depth: int
    running_jobs: int
    max_jobs: int
    waiting_jobs: int = Field(0, description="pending until their dependencies complete")
    retrying_jobs: int = Field(0, description="pending in a retry backoff")
    failed_last_hour: int = Field(0, description="jobs that failed in the last hour")
    scheduled_jobs: int = Field(0, description="attempts dispatched since the daemon started")
    scheduler_seconds: float = Field(0.0, description="time spent choosing what to run, since start")


class RayHealth(View):
    connected: bool
    address: str | None = None
    started_by_daemon: bool = False
    dashboard: str | None = None
    nodes: int = 0
    resources: dict[str, float] = Field(default_factory=dict)
    available: dict[str, float] = Field(default_factory=dict)
    executors: int = Field(0, description="long-lived executors running short jobs (a Ray worker each), on all nodes")
    detail: str | None = None


class Health(View):
    status: Literal["ok", "degraded"]
    version: str
    pid: int
    uptime_s: float
    role: str = Field("leader", description="leader (schedules and writes) or standby (reads; writes refused)")
    leader: dict[str, Any] | None = Field(None, description="the lease: holder, address, epoch, age (shared DB)")
    socket: str | None = None
    tcp: str | None = None
    database: dict[str, Any]
    storage: dict[str, Any] | None = Field(None, description="where jobs' files live: url, shared (storage.url "
                                           "set), waiting_logs (jobs whose newest lines are not uploaded yet), error "
                                           "(why the last upload failed)")
    ray: RayHealth
    identity: str | None = Field(None, description="which OS user tenants' jobs run as (single-user: all "
                                 "share the daemon's)")
    containment: str | None = Field(None, description="how a job's processes are held, so that cancel and "
                                    "timeout end them all (on the daemon's node): cgroup v2, cgroup v1 or subreaper")


# -- metrics ------------------------------------------------------------------------------------
class NodeUsage(View):
    """What Ray's tasks hold on one node (logical resources, as the scheduler sees them)."""

    cpu_used: float = 0.0
    cpu_total: float = 0.0
    memory_used: float = Field(0.0, description="bytes")
    memory_total: float = Field(0.0, description="bytes")
    gpu_used: float = 0.0
    gpu_total: float = 0.0


class MetricPoint(NodeUsage):
    """One interval: counters are counts in the interval, gauges are means over it. Cluster-wide
    resources are NodeUsage's fields; `nodes` has them per node."""

    time: datetime = Field(description="start of the interval (UTC)")
    seconds: float = Field(description="length of the interval")
    submitted: int = 0
    started: int = 0
    finished: int = Field(0, description="jobs that ended COMPLETED")
    failed: int = Field(0, description="jobs that ended FAILED (timeouts and lost nodes included)")
    queue_depth: float = 0.0
    running: float = 0.0
    nodes: dict[str, NodeUsage] = Field(default_factory=dict)


class MetricsSeries(View):
    window_s: float
    step_s: float = Field(description="the interval of the points (finer data is rolled up)")
    points: list[MetricPoint]

"""SQLModel tables. Times are float epoch seconds (UTC): portable across SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index
from sqlmodel import Field, SQLModel


class Job(SQLModel, table=True):
    # listings page by seq within a status / tenant, and "failed in the last hour" reads a range of
    # ended_at within a status: these stay fast at millions of rows
    __table_args__ = (Index("ix_job_status_seq", "status", "seq"), Index("ix_job_tenant_seq", "tenant", "seq"),
                      Index("ix_job_status_ended", "status", "ended_at"), Index("ix_job_array_seq", "array_id", "seq"))

    id: str = Field(primary_key=True, max_length=32)
    seq: int = Field(index=True, description="submission order: FIFO within a priority")
    name: str = Field(index=True, max_length=128)
    tenant: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=16)
    reason: str | None = None
    priority: int = 0
    kind: str = Field(max_length=16)
    spec: str = Field(description="JobSpec as JSON")
    exit_code: int | None = None
    result: str | None = Field(default=None, description="JSON set by the job")
    attempts_made: int = 0
    node: str | None = None
    created_at: float
    updated_at: float
    started_at: float | None = None
    ended_at: float | None = None
    not_before: float | None = Field(default=None, description="a retry waits until then (backoff)")
    held: bool = Field(default=False, description="kept from starting until released (hold, submit --hold)")
    retry_base: int | None = Field(default=None, description="attempts made before the current run (user retry)")
    array_id: str | None = Field(default=None, max_length=32, description="a task's array (its tasks are left out "
                                 "of listings unless asked for)")
    array_index: int | None = Field(default=None, sa_type=BigInteger, description="a task's index in its array")


class JobCount(SQLModel, table=True):
    """Jobs per (tenant, status), kept in the same transactions that insert jobs and move them:
    `stats` and /metrics read a few rows instead of counting millions. No tenant is ""."""

    tenant: str = Field(default="", primary_key=True, max_length=64)
    status: str = Field(primary_key=True, max_length=16)
    n: int = 0


class Dependency(SQLModel, table=True):
    """One edge of the DAG: `job_id` waits for `depends_on` to complete."""

    job_id: str = Field(primary_key=True, max_length=32)
    depends_on: str = Field(primary_key=True, index=True, max_length=32)


class Attempt(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True, max_length=32)
    number: int
    status: str = Field(max_length=16)
    node: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    cpu_seconds: float | None = Field(default=None, description="user+system CPU of the job's process tree")
    max_rss_bytes: int | None = Field(default=None, sa_type=BigInteger, description="peak resident memory (ru_maxrss)")


class JobEvent(SQLModel, table=True):
    """The audit trail: one row per transition."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True, max_length=32)
    time: float
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str = Field(max_length=16)
    reason: str | None = None
    attempt: int = 0


class IdempotencyKey(SQLModel, table=True):
    """A client's key for one submit request: a retried request gets the same jobs, not new ones."""

    key: str = Field(primary_key=True, max_length=128)
    digest: str = Field(max_length=64, description="SHA-256 of the request's jobs: a reused key must match")
    job_ids: str = Field(description="JSON list of the job ids the request created")
    created_at: float = Field(index=True)


class Token(SQLModel, table=True):
    """API tokens, stored only as SHA-256 hashes (the token itself is shown once, at creation)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    tenant: str | None = Field(default=None, max_length=64)
    hash: str = Field(index=True, unique=True, max_length=64)
    admin: bool = False
    created_at: float
    role: str = Field(default="member", max_length=16, description="admin, member or viewer")
    rate_limit: float | None = Field(default=None, description="requests/s; None: the daemon's default")
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


class Tenant(SQLModel, table=True):
    """A group of users and tokens whose jobs are isolated from others', with its quotas."""

    name: str = Field(primary_key=True, max_length=64)
    max_running: int | None = None
    max_cpu: float | None = None
    max_gpu: float | None = None
    max_queued: int | None = None
    weight: float = Field(default=1.0, description="fair share: CPUs in use are compared per unit of weight")
    run_as: str | None = Field(default=None, max_length=32, description="Unix user its token callers' jobs run as")
    created_at: float


class PeerUser(SQLModel, table=True):
    """A local user (uid, as the Unix socket reports it) mapped to a tenant and role."""

    uid: int = Field(primary_key=True)
    tenant: str = Field(max_length=64)
    role: str = Field(default="member", max_length=16)


class AuditEvent(SQLModel, table=True):
    """Who did what: every mutating call and every denied request."""

    id: int | None = Field(default=None, primary_key=True)
    time: float = Field(index=True)
    actor: str = Field(max_length=100, description="token:NAME#ID or uid:N")
    tenant: str | None = Field(default=None, max_length=64)
    action: str = Field(max_length=64)
    target: str | None = Field(default=None, max_length=200)
    status: int = Field(description="the HTTP status of the answer")
    detail: str | None = Field(default=None, max_length=500)


class Lease(SQLModel, table=True):
    """Leadership among daemons sharing one database: one row, renewed by its holder; `epoch`
    grows with every new holder and fences off a deposed one."""

    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(max_length=200)
    address: str | None = Field(default=None, max_length=200, description="where clients reach the holder")
    epoch: int = 0
    acquired_at: float
    renewed_at: float
    expires_at: float


class Meta(SQLModel, table=True):
    """Small durable facts of the daemon, e.g. the dispatcher event cursor."""

    key: str = Field(primary_key=True, max_length=64)
    value: str


class Node(SQLModel, table=True):
    """A machine sage-ops made a Ray node (nodes the head had already are only seen in Ray)."""

    name: str = Field(primary_key=True, max_length=64)
    backend: str = Field(default="ssh", max_length=16)
    host: str = Field(max_length=255)
    user: str | None = Field(default=None, max_length=64)
    port: int = 22
    key_file: str | None = Field(default=None, max_length=1024)
    status: str = Field(max_length=16, description="lifecycle.NodeStatus")
    detail: str | None = Field(default=None, max_length=500, description="the last step, or why it failed")
    ray_node_id: str | None = Field(default=None, max_length=64)
    options: str = Field(default="{}", description="JSON: resources, cpus, gpus, venv, python, ... of the add")
    added_at: float
    updated_at: float


class MetricSample(SQLModel, table=True):
    """One interval of the daemon's series (MetricPoint as JSON). Level 0 is the sampling
    interval; higher levels are roll-ups kept longer (metrics.LEVELS)."""

    __table_args__ = (Index("ix_metricsample_level_time", "level", "time"),)
    id: int | None = Field(default=None, primary_key=True)
    level: int
    time: float
    data: str


class PipelineStats(SQLModel, table=True):
    """The latest per-operator metrics of a pipeline job (its plan is in the spec)."""

    job_id: str = Field(primary_key=True, max_length=32)
    attempt: int
    data: str = Field(description="JSON list of OperatorMetrics")
    updated_at: float


class PoolHost(SQLModel, table=True):
    """What an elastic pool's loop remembers of one of its hosts between passes, so that a new
    leader carries on where the last one stopped: its node's state as last seen (a loss or a join's
    end is told by the change), its bootstrap failures in a row, and since when its node is idle."""

    pool: str = Field(primary_key=True, max_length=64)
    host: str = Field(primary_key=True, max_length=320)
    state: str | None = Field(default=None, max_length=16, description="pools.policy.PoolNodeState")
    failures: int = 0
    retry_at: float = 0.0
    reason: str = Field(default="", max_length=500)
    idle_since: float | None = None

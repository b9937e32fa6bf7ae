"""What the API answers about jobs: their records, attempts, logs, events and graphs, read the
same way by the client, the TUI, the web pages and the CLI's --json. Apart from the job spec
(schemas.py), because a reader changes what is shown without touching what a submit may say."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, Field

from .lifecycle import JobStatus
from .pipeline.shapes import PipelineView
from .schemas import JobKind, JobSpec


class View(BaseModel):
    """A response model that also reads like the dicts of the JobManager docs: view['status']."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


class AttemptView(View):
    number: int
    status: JobStatus
    node: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cpu_seconds: float | None = Field(None, description="user+system CPU time of the attempt's process tree "
                                      "(what it waited for), as its runner measured it at the end")
    max_rss_bytes: int | None = Field(None, description="peak resident memory of its largest process (ru_maxrss)")


class PendingCode(str, Enum):
    """Why a PENDING job has not started (Slurm's reason codes, where it has one)."""

    DEPENDENCY = "Dependency"  # waits for other jobs to end
    DEPENDENCY_NEVER_SATISFIED = "DependencyNeverSatisfied"  # kept waiting (--kill-on-invalid-dep no)
    HELD = "Held"  # held by a user until released
    BEGIN_TIME = "BeginTime"  # --begin, or a retry's backoff, is still ahead
    QUOTA_MAX_RUNNING = "QuotaMaxRunning"  # its tenant runs as many jobs as it may
    QUOTA_MAX_CPU = "QuotaMaxCpu"
    QUOTA_MAX_GPU = "QuotaMaxGpu"
    RESOURCES = "Resources"  # next in line; no node has room yet (it holds the reservation)
    RESERVATION = "Reservation"  # would fit now, but would delay the reserved job (no --timeout, or too long)
    PRIORITY = "Priority"  # jobs ahead of it go first
    NODE_DRAINING = "NodeDraining"  # only a draining node could hold it
    ARRAY_THROTTLE = "ArrayThrottle"  # an array with as many tasks at once as its %N allows
    STARTING = "Starting"  # handed to Ray, not running yet

    def __str__(self) -> str:
        return self.value


class Pending(View):
    """Why a PENDING job waits, where it stands and when it may start: worked out by the leader
    from its queue when asked (never stored)."""

    code: PendingCode
    text: str = Field(description="the reason in words, e.g. needs CPU=4, largest free CPU=2")
    position: int | None = Field(None, description="1 = next to start, among the jobs ready to run, in priority "
                                 "order (fair share may move it between tenants)")
    of: int | None = Field(None, description="jobs ready to run")
    estimated_start: datetime | None = Field(None, description="from the running jobs' time limits (as squeue "
                                             "--start): the latest it should start if no job ends early")


class ArrayProgress(View):
    """An array's tasks by state; `waiting` counts the ones not made yet (made as their turn comes)."""

    size: int
    throttle: int | None = None
    waiting: int = Field(0, description="tasks not started: not made yet, or PENDING")
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.cancelled


class JobView(View):
    id: str
    name: str
    status: JobStatus
    reason: str | None = None
    array: ArrayProgress | None = Field(None, description="an array job's progress over its tasks")
    array_id: str | None = Field(None, description="a task's array")
    array_index: int | None = Field(None, description="a task's index in its array")
    pending: Pending | None = Field(None, description="a PENDING job's reason code, position and estimated start")
    priority: int = 0
    tenant: str | None = None
    kind: JobKind = JobKind.COMMAND
    exit_code: int | None = None
    attempts_made: int = 0
    node: str | None = None
    held: bool = Field(False, description="kept from starting until released (hold / release)")
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    spec: JobSpec | None = None
    attempts: list[AttemptView] = Field(default_factory=list)
    pipeline: PipelineView | None = Field(None, description="a pipeline job's operators and their metrics")

    @property
    def job_id(self) -> str:
        return self.id


class JobList(View):
    jobs: list[JobView]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null at the end")


class JobRef(View):
    """What a batch submit answers per job: enough to follow up, cheap for 100,000 jobs."""

    id: str
    name: str
    status: JobStatus
    reason: str | None = None


class JobRefList(View):
    jobs: list[JobRef]


class BulkResult(View):
    """What a bulk cancel or retry did: the jobs it changed and, per id, why others were not."""

    affected: list[JobRef] = Field(default_factory=list)
    cascaded: list[JobRef] = Field(default_factory=list, description="dependents cancelled as a consequence")
    unchanged: list[JobRef] = Field(default_factory=list, description="already in the state asked for: a cancel "
                                    "of a job that has ended (nothing to do, not an error)")
    errors: list[dict[str, str]] = Field(default_factory=list)


class GraphNode(View):
    id: str
    name: str
    status: JobStatus
    dependencies: list[str] = Field(default_factory=list)
    priority: int = 0
    duration: float = 0.0
    critical: bool = False


class GraphView(View):
    """A job's DAG (every job connected to it by dependencies), in topological order."""

    root: str
    order: list[str]
    critical_path: list[str]
    total: int
    done: int
    completed: int
    running: int
    pending: int
    failed: int
    cancelled: int
    nodes: list[GraphNode]
    pipeline: PipelineView | None = Field(None, description="the root job's operators, if it is a pipeline")


class JobResult(View):
    id: str
    status: JobStatus
    result: Any = None


class LogEntry(View):
    timestamp: datetime
    stream: Literal["stdout", "stderr", "system"] = "stdout"
    message: str
    attempt: int = 1


class JobEventView(View):
    time: datetime
    from_status: JobStatus | None
    to_status: JobStatus
    reason: str | None = None
    attempt: int = 0


class JobChange(View):
    """A line of the event stream (`GET /v1/events`): a job's change of state, in commit order.
    `kind` "heartbeat" says the stream is alive — the first one comes as soon as the stream is
    live, so a view loaded after it misses nothing; "resync" says this follower fell too far behind
    and lost events (reload what you show, then follow from `seq`)."""

    seq: int = Field(description="the event's id: resume with ?after=seq")
    kind: Literal["job", "heartbeat", "resync"] = "job"
    job_id: str | None = None
    name: str | None = None
    tenant: str | None = None
    time: datetime | None = None
    from_status: JobStatus | None = None
    to_status: JobStatus | None = None
    reason: str | None = None
    attempt: int = 0
    priority: int | None = Field(None, description="the job's fields as they are now (a live row needs no fetch)")
    node: str | None = None
    exit_code: int | None = None

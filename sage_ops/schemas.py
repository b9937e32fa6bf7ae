"""API shapes shared by the server, the client and the CLI's --json (no heavy imports here)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .lifecycle import JobStatus

MAX_SCRIPT_BYTES = 4 * 1024 * 1024
_UNITS = {
    "": 1, "B": 1,
    "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3, "T": 1000**4, "TB": 1000**4,
    "KI": 1024, "KIB": 1024, "MI": 1024**2, "MIB": 1024**2, "GI": 1024**3, "GIB": 1024**3,
    "TI": 1024**4, "TIB": 1024**4,
}
_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}$")


def parse_memory(value: str | int | float) -> int:
    """'8GB', '512MiB', '1.5G' or a byte count -> bytes."""
    if isinstance(value, bool):
        raise ValueError("memory must be a size such as 512MiB or 8GB")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("memory must not be negative")
        return int(value)
    match = _MEM_RE.match(str(value))
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"bad memory size {value!r}: use a number with B, KB, MB, GB, KiB, MiB, GiB")
    return int(float(match.group(1)) * _UNITS[unit])


class View(BaseModel):
    """A response model that also reads like the dicts of the JobManager docs: view['status']."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(Strict):
    cpu: float = Field(1.0, ge=0, le=100_000, description="CPUs (Ray num_cpus)")
    memory: int | None = Field(None, description="bytes; accepts '8GB', '512MiB'")
    gpu: float = Field(0.0, ge=0, le=10_000)
    custom_resources: dict[str, float] = Field(default_factory=dict)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int | None:
        return None if v is None else parse_memory(v)

    @field_validator("custom_resources")
    @classmethod
    def _custom(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if not name or name in {"CPU", "GPU", "memory"} or not _NAME_RE.match(name):
                raise ValueError(f"bad custom resource name {name!r}")
            if amount <= 0:
                raise ValueError(f"custom resource {name} must be positive")
        return v

    def as_ray(self) -> dict[str, float]:
        """One flat mapping, in Ray's names, to compare with node resources."""
        need = {"CPU": self.cpu, "GPU": self.gpu, **self.custom_resources}
        if self.memory:
            need["memory"] = float(self.memory)
        return {k: v for k, v in need.items() if v}


class RetryPolicy(Strict):
    max_retries: int = Field(0, ge=0, le=1000)
    retry_delay: float = Field(0.0, ge=0, le=7 * 86400)
    retry_exponential_base: float = Field(1.0, ge=1, le=100)
    max_delay: float = Field(3600.0, ge=0, le=7 * 86400, description="cap on one backoff delay, seconds")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based) before the next one."""
        try:
            raw = self.retry_delay * self.retry_exponential_base ** max(0, attempt - 1)
        except OverflowError:
            raw = self.max_delay
        return min(raw, self.max_delay)


class JobKind(str, Enum):
    SCRIPT = "script"
    COMMAND = "command"
    PIPELINE = "pipeline"


class ScriptFile(Strict):
    """The script travels with the job (content, not path), so it runs on any node."""

    filename: str = Field(min_length=1, max_length=255)
    content: str = Field(max_length=MAX_SCRIPT_BYTES)

    @field_validator("filename")
    @classmethod
    def _plain(cls, v: str) -> str:
        if "/" in v or v in {".", ".."} or "\0" in v:
            raise ValueError("script filename must be a plain file name")
        return v


class JobSpec(Strict):
    kind: JobKind = JobKind.COMMAND
    name: str | None = Field(None, max_length=128)
    command: list[str] = Field(default_factory=list, description="argv of a command job")
    script: ScriptFile | None = None
    args: list[str] = Field(default_factory=list, description="arguments after the script")
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    resources: Resources = Field(default_factory=Resources)
    dependencies: list[str] = Field(default_factory=list)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: float | None = Field(None, gt=0, le=365 * 86400)
    tenant: str | None = Field(None, max_length=64)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"bad environment variable name {key!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME_RE.match(v):
            raise ValueError("name: letters, digits and _.:@+=- only, up to 128 characters")
        return v

    @model_validator(mode="after")
    def _shape(self) -> JobSpec:
        if self.kind is JobKind.SCRIPT and self.script is None:
            raise ValueError("a script job needs `script` {filename, content}")
        if self.kind is JobKind.COMMAND and not self.command:
            raise ValueError("a command job needs a non-empty `command` argv")
        if self.kind is JobKind.PIPELINE:
            raise ValueError("pipeline jobs are not supported yet")
        return self

    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.script is not None:
            return self.script.filename
        return " ".join(self.command)[:60]


class AttemptView(View):
    number: int
    status: JobStatus
    node: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class JobView(View):
    id: str
    name: str
    status: JobStatus
    reason: str | None = None
    priority: int = 0
    tenant: str | None = None
    kind: JobKind = JobKind.COMMAND
    exit_code: int | None = None
    attempts_made: int = 0
    node: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    spec: JobSpec | None = None
    attempts: list[AttemptView] = Field(default_factory=list)

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


class BatchSubmit(Strict):
    jobs: list[JobSpec] = Field(min_length=1, max_length=100_000)


class JobFilter(Strict):
    """Which jobs a bulk operation or a listing touches: every given field must match."""

    status: list[JobStatus] = Field(default_factory=list)
    name: str | None = Field(None, max_length=256, description="glob: * and ?")
    tenant: str | None = Field(None, max_length=64)
    since: datetime | None = Field(None, description="created at or after")
    until: datetime | None = Field(None, description="created before")

    def is_empty(self) -> bool:
        return not (self.status or self.name or self.tenant or self.since or self.until)


class BatchCancel(Strict):
    """Ids, or a filter (never neither: an empty filter would touch every job)."""

    ids: list[str] = Field(default_factory=list, max_length=100_000)
    filter: JobFilter | None = None

    @model_validator(mode="after")
    def _one(self) -> BatchCancel:
        if bool(self.ids) == bool(self.filter and not self.filter.is_empty()):
            raise ValueError("give either `ids` or a non-empty `filter`")
        return self


BatchRetry = BatchCancel


class BulkResult(View):
    """What a bulk cancel or retry did: the jobs it changed and, per id, why others were not."""

    affected: list[JobRef] = Field(default_factory=list)
    cascaded: list[JobRef] = Field(default_factory=list, description="dependents cancelled as a consequence")
    errors: list[dict[str, str]] = Field(default_factory=list)


class PriorityChange(Strict):
    priority: int = Field(ge=-1_000_000, le=1_000_000)


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


class Stats(View):
    total_jobs: int
    active_jobs: int
    by_status: dict[str, int]
    queue_depth: int
    running_jobs: int
    max_jobs: int
    waiting_jobs: int = Field(0, description="pending until their dependencies complete")
    retrying_jobs: int = Field(0, description="pending in a retry backoff")
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
    ray: RayHealth

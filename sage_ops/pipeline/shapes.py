"""The shapes of a pipeline job the daemon can read: its plan and its per-operator metrics.

The code of a pipeline travels as an opaque cloudpickle payload that only the job's own process
opens; everything the daemon, the CLI and the TUI show comes from these plain-JSON shapes.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_PAYLOAD_BYTES = 8 * 1024 * 1024  # the base64 text of the pickled graph
MAX_OPERATORS = 1000
MAX_PARALLELISM = 1024
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class OperatorKind(str, Enum):
    SOURCE = "source"
    MAP = "map"
    FILTER = "filter"
    FLATMAP = "flatmap"
    REDUCE = "reduce"
    SINK = "sink"


class Partitioning(str, Enum):
    """How records cross an edge (Flink's names): to the same instance, spread evenly, to the
    instance that owns the key, or to every instance."""

    FORWARD = "forward"
    ROUND_ROBIN = "round_robin"
    HASH = "hash"
    BROADCAST = "broadcast"


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class OperatorInfo(_Shape):
    id: int = Field(ge=0)
    name: str = Field(max_length=200, description="e.g. 'Map: Tokenize'")
    kind: OperatorKind
    parallelism: int = Field(ge=1, le=MAX_PARALLELISM)
    task: int = Field(ge=0, description="the fused task (one Ray actor per instance) it runs in")
    inputs: list[int] = Field(default_factory=list)
    partitioning: Partitioning | None = Field(None, description="how records reach it from its input")


class TaskInfo(_Shape):
    id: int = Field(ge=0)
    name: str = Field(max_length=2000, description="its operators joined by ' -> '")
    operators: list[int] = Field(min_length=1)
    parallelism: int = Field(ge=1, le=MAX_PARALLELISM)


class TaskEdge(_Shape):
    source: int
    target: int
    partitioning: Partitioning


class PipelinePlan(_Shape):
    """The execution graph: operators, the tasks they are fused into, the edges between tasks."""

    operators: list[OperatorInfo] = Field(max_length=MAX_OPERATORS)
    tasks: list[TaskInfo] = Field(max_length=MAX_OPERATORS)
    edges: list[TaskEdge] = Field(default_factory=list, max_length=MAX_OPERATORS * 4)

    @model_validator(mode="after")
    def _consistent(self) -> PipelinePlan:
        ops = {o.id for o in self.operators}
        tasks = {t.id: t for t in self.tasks}
        if len(ops) != len(self.operators) or len(tasks) != len(self.tasks):
            raise ValueError("plan: operator and task ids must be unique")
        for o in self.operators:
            if o.task not in tasks or o.id not in tasks[o.task].operators:
                raise ValueError(f"plan: operator {o.id} names task {o.task}, which does not hold it")
            if any(i not in ops for i in o.inputs):
                raise ValueError(f"plan: operator {o.id} reads from an unknown operator")
        for t in self.tasks:
            if any(i not in ops for i in t.operators):
                raise ValueError(f"plan: task {t.id} holds an unknown operator")
        for e in self.edges:
            if e.source not in tasks or e.target not in tasks:
                raise ValueError("plan: an edge joins unknown tasks")
        return self

    def actors(self) -> int:
        return sum(t.parallelism for t in self.tasks)


class PipelineOptions(_Shape):
    batch_size: int = Field(1024, ge=1, le=1_000_000, description="records per batch between tasks")
    linger_ms: float = Field(50.0, ge=0, le=60_000, description="send a partial batch after this long")
    max_inflight: int = Field(4, ge=1, le=1024, description="unacknowledged batches per channel: backpressure")
    chaining: bool = Field(True, description="fuse forward-connected operators of equal parallelism")


class PipelineSpec(_Shape):
    payload: str | None = Field(
        None, description="base64 cloudpickle of the graph; only the job's process opens it (null in views)")
    payload_bytes: int = Field(0, ge=0, description="size of the payload (kept when a view leaves it out)")
    python: str = Field(pattern=r"^\d+\.\d+$", description="the submitting Python (major.minor): pickles need it")
    plan: PipelinePlan
    options: PipelineOptions = Field(default_factory=PipelineOptions)

    @field_validator("payload")
    @classmethod
    def _payload(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if len(v) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"pipeline payload: at most {MAX_PAYLOAD_BYTES} bytes (8 MiB) of base64; "
                             "read large data from a source instead of capturing it in a closure")
        if not _B64.fullmatch(v) or len(v) % 4:
            raise ValueError("pipeline payload: not base64")
        return v


class OperatorMetrics(_Shape):
    id: int
    records_in: int = 0
    records_out: int = 0
    batches_in: int = 0
    busy_seconds: float = Field(0.0, description="time spent in the operator's own code")
    backpressure_seconds: float = Field(0.0, description="time its task waited for room downstream")
    rate_in: float = Field(0.0, description="records/s in, over the last report interval")
    rate_out: float = 0.0


class PipelineView(_Shape):
    """What `status`, `graph` and the TUI show of a pipeline job: its plan and live metrics."""

    plan: PipelinePlan
    metrics: list[OperatorMetrics] = Field(default_factory=list)
    attempt: int | None = None
    updated_at: datetime | None = None

    def metrics_of(self, operator: int) -> OperatorMetrics:
        for m in self.metrics:
            if m.id == operator:
                return m
        return OperatorMetrics(id=operator)

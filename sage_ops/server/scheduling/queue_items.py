"""What the scheduler holds of a job: waiting in memory (Queued) or handed to Ray (Dispatched),
and the clock it reads. Plain values, imported by the scheduler and its parts alike (no cycle)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...arrays import Indices
from ...lifecycle import JobStatus
from ...schemas import ArraySpec, JobSpec


@dataclass(slots=True, eq=False)
class Queued:
    """A job the daemon holds in memory, waiting (for dependencies, a backoff or resources).

    It keeps its spec as stored (`JobSpec.stored`) and the few facts the queue reads on every
    pass: a validated JobSpec is about 2.7 KB in 22 objects, so 100,000 waiting jobs would hold
    270 MB of them. `spec` decodes it, for the rarer readers; a dispatched job decodes it once."""

    id: str
    seq: int
    stored: str
    status: JobStatus
    need: dict[str, float]  # shared by jobs that ask the same (`_need`): never changed in place
    tenant: str | None
    timeout: float | None
    array: ArraySpec | None
    kill_on_invalid_dep: bool
    attempts_made: int = 0
    retry_base: int = 0
    priority: int = 0
    not_before: float | None = None
    blocked: str | None = None  # the quota it last waited for (shown as its reason)
    held: bool = False  # kept from starting until released

    @classmethod
    def of(cls, job_id: str, seq: int, spec: JobSpec, status: JobStatus, attempts_made: int = 0,
           retry_base: int = 0, priority: int = 0, *, stored: str | None = None, **more: Any) -> Queued:
        """`stored`: the spec's `stored()` form when the caller has it already."""
        return cls(job_id, seq, stored or spec.stored(), status, attempts_made=attempts_made, retry_base=retry_base,
                   priority=priority, **_facts(spec), **more)

    @property
    def spec(self) -> JobSpec:
        return JobSpec.model_validate_json(self.stored)

    def respec(self, spec: JobSpec) -> None:
        """Its spec changed (`update`): what it keeps follows."""
        self.stored, self.priority = spec.stored(), spec.priority
        for name, value in _facts(spec).items():
            setattr(self, name, value)


def _facts(spec: JobSpec) -> dict[str, Any]:
    """What a waiting job keeps of its spec besides the stored form: what the queue reads."""
    return {"need": _need(spec), "tenant": spec.tenant, "timeout": spec.timeout, "array": spec.array,
            "kill_on_invalid_dep": spec.kill_on_invalid_dep}


_NEEDS: dict[tuple[tuple[str, float], ...], dict[str, float]] = {}


def _need(spec: JobSpec) -> dict[str, float]:
    """The job's resources in Ray's names, one dict per distinct need (a sweep asks the same
    100,000 times), so a queued job does not carry its own."""
    need = spec.resources.as_ray()
    key = tuple(sorted(need.items()))
    shared = _NEEDS.get(key)
    if shared is None:
        if len(_NEEDS) >= 10_000:  # every job asking for something else: stop sharing, stay bounded
            return need
        shared = _NEEDS[key] = need
    return shared


@dataclass
class Dispatched:
    """A job handed to Ray, with what a retry needs to queue it again."""

    job: Queued
    attempt: int
    node: str
    started: bool = False
    started_at: float = 0.0
    cancelling: bool = False
    preempting: str | None = None  # the job it is stopped for: requeued when it ends, whatever its exit
    ran_on: str | None = None  # the node the runner reported
    spec: JobSpec = field(init=False)  # decoded once: a running job's is read often, and they are few

    def __post_init__(self) -> None:
        self.spec = self.job.spec

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def need(self) -> dict[str, float]:
        return self.job.need

    @property
    def tenant(self) -> str | None:
        return self.job.tenant


@dataclass
class Clock:
    """Injectable time source."""

    now: Callable[[], float] = field(default=time.time)


@dataclass
class ArrayRun:
    """An unfinished array: its own entry, its indices, how many tasks are made and which run."""

    job: Queued
    indices: Indices
    made: int = 0  # positions 0..made-1 have a task row
    active: set[str] = field(default_factory=set)  # made, not ended
    failed: int = 0
    cancelled: int = 0
    started: bool = False  # the array's row is RUNNING
    after_corr: list[str] = field(init=False)  # read on every top-up: kept, not decoded each time

    def __post_init__(self) -> None:
        self.after_corr = self.job.spec.after_corr

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def first_seq(self) -> int:
        """Its tasks' seqs are the array's (its own row holds the last): FIFO as one submission."""
        return self.job.seq - len(self.indices) + 1

    def limit(self, window: int) -> int:
        throttle = self.job.array.throttle if self.job.array else None
        return throttle or window

    def room(self, window: int) -> int:
        return max(0, min(self.limit(window) - len(self.active), len(self.indices) - self.made))

    def over(self) -> bool:
        return self.made >= len(self.indices) and not self.active

    def outcome(self) -> JobStatus:
        return JobStatus.FAILED if self.failed else JobStatus.CANCELLED if self.cancelled else JobStatus.COMPLETED

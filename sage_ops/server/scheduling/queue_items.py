"""What the scheduler holds of a job: waiting in memory (Queued) or handed to Ray (Dispatched),
and the clock it reads. Plain values, imported by the scheduler and its parts alike (no cycle)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ...arrays import Indices
from ...lifecycle import JobStatus
from ...schemas import JobSpec


@dataclass
class Queued:
    """A job the daemon holds in memory, waiting (for dependencies, a backoff or resources)."""

    id: str
    seq: int
    spec: JobSpec
    status: JobStatus
    attempts_made: int = 0
    retry_base: int = 0
    priority: int = 0
    not_before: float | None = None
    blocked: str | None = None  # the quota it last waited for (shown as its reason)
    held: bool = False  # kept from starting until released

    @property
    def need(self) -> dict[str, float]:
        return self.spec.resources.as_ray()

    @property
    def tenant(self) -> str | None:
        return self.spec.tenant


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

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def need(self) -> dict[str, float]:
        return self.job.need

    @property
    def spec(self) -> JobSpec:
        return self.job.spec

    @property
    def tenant(self) -> str | None:
        return self.job.spec.tenant


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

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def first_seq(self) -> int:
        """Its tasks' seqs are the array's (its own row holds the last): FIFO as one submission."""
        return self.job.seq - len(self.indices) + 1

    def limit(self, window: int) -> int:
        throttle = self.job.spec.array.throttle if self.job.spec.array else None
        return throttle or window

    def room(self, window: int) -> int:
        return max(0, min(self.limit(window) - len(self.active), len(self.indices) - self.made))

    def over(self) -> bool:
        return self.made >= len(self.indices) and not self.active

    def outcome(self) -> JobStatus:
        return JobStatus.FAILED if self.failed else JobStatus.CANCELLED if self.cancelled else JobStatus.COMPLETED

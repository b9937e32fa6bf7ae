"""The queue of one term of leadership, as data: what waits (and why), what runs, the ready heaps
per tenant, the retries in backoff; and what the scheduler counts for the process's life. The
parts of the scheduler (admission, dispatch, reconcile, outcomes, operations) share these two
objects and nothing else of each other's."""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ...access import Quotas
from ...config import Config
from ...lifecycle import JobStatus
from ...views import PendingCode
from ..storage import store as st
from .capacity import Capacity
from .execution_graph import Waiting
from .forecast import Reservation
from .queue_items import ArrayRun, Clock, Dispatched, Queued
from .quotas import FairQueue, Tally, over_quota

S = JobStatus


@dataclass
class QueueState:
    clock: Clock
    capacity: Capacity
    queued: Tally[Queued] = field(default_factory=Tally)  # not in Ray: waiting, in backoff or runnable
    ready_queue: FairQueue = field(default_factory=FairQueue)  # runnable now, per tenant
    quotas: dict[str, Quotas] = field(default_factory=dict)
    later: list[tuple[float, int, str]] = field(default_factory=list)  # (not_before, seq, id): retries in backoff
    waiting: Waiting = field(default_factory=Waiting)
    arrays: dict[str, ArrayRun] = field(default_factory=dict)  # unfinished arrays
    arrays_due: set[str] = field(default_factory=set)  # arrays that may make tasks (Arrays.top_up)
    stuck: dict[str, tuple[str, str]] = field(default_factory=dict)  # job -> (dependency, why): never met, kept
    preemptions: deque[float] = field(default_factory=deque)  # when each of the last minute's was asked
    reservation: Reservation | None = None  # the last pass's: the job that could not start, and when it can
    dispatched: Tally[Dispatched] = field(default_factory=Tally)
    cancels: dict[str, float] = field(default_factory=dict)  # job id -> time.monotonic() of its last kill asked for
    active: int = 0
    seq: int = 0
    ready: bool = False  # recovered: Ray's view and the database's agree
    stopping: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done_waiters: dict[str, list[asyncio.Future[None]]] = field(default_factory=dict)
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    def queue(self, job: Queued) -> None:
        """A pending job with nothing to wait for: runnable now, or after its backoff. A held
        job waits for its release instead (Operations.release queues it); a stuck one for an update."""
        if job.held or job.id in self.stuck:
            return
        if job.not_before and job.not_before > self.clock.now():
            heapq.heappush(self.later, (job.not_before, job.seq, job.id))
        elif job.array is not None:  # an array is never run itself: its tasks are made and queued
            job.not_before = None
            self.arrays_due.add(job.id)
        else:
            job.not_before = None
            self.ready_queue.push(job.tenant, job.priority, job.seq, job.id)
        self.wake.set()

    def over_quota(self, job: Queued) -> tuple[PendingCode, str] | None:
        """Why `job` cannot start now for its tenant's quota (reason code, words), or None."""
        tenant = job.tenant
        if tenant is None or tenant not in self.quotas:
            return None
        need = job.need
        return over_quota(tenant, self.quotas[tenant], self.dispatched.use[tenant], need.get("CPU", 0.0),
                          need.get("GPU", 0.0))

    def in_background(self, work: Any) -> None:
        """Run a write nobody waits for, kept referenced until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def usage(self, tenant: str) -> dict[str, Any]:
        run = self.dispatched.use.get(tenant)
        queued = self.queued.use.get(tenant)
        return {"running_jobs": run.jobs if run else 0, "cpu_in_use": round(run.cpu, 6) if run else 0.0,
                "gpu_in_use": round(run.gpu, 6) if run else 0.0, "queued_jobs": queued.jobs if queued else 0}

    def queue_depth(self, tenant: str | None = None) -> int:
        return sum(1 for j in self.queued.values() if j.status is S.PENDING and (tenant is None or j.tenant == tenant))


@dataclass
class Counters:
    """Since the process started (metrics, stats): they survive terms of leadership."""

    decision_seconds: float = 0.0  # time spent choosing what to run (stats, benchmarks)
    decisions: int = 0
    ended: dict[str, int] = field(default_factory=dict)  # jobs ended, by status
    submitted: int = 0  # jobs accepted
    started: int = 0  # attempts that started running
    refused: int = 0  # calls the dispatcher refused (its count since it started)


@dataclass(eq=False)
class TermPart:
    """What every part of a term works with; each part adds its own collaborators."""

    cfg: Config
    store: st.Store
    clock: Clock
    state: QueueState
    counters: Counters

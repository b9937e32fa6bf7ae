"""Why a pending job waits, its place in line and its estimated start: read off the queue in
memory when someone asks (status, jobs, the TUI), so the scheduler never writes per job per pass."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timezone

from ...lifecycle import JobStatus
from ...units import moment_text
from ...views import Pending
from ...views import PendingCode as P
from ..pools.policy import fits as pool_fits
from .capacity import fmt
from .forecast import Cluster, fits, starts
from .queue_items import ArrayRun, Queued
from .queue_state import QueueState

S = JobStatus
ESTIMATED = 1000  # jobs in line whose start is estimated; those behind them get none


def ready_order(state: QueueState) -> list[Queued]:
    """The jobs ready to start, in priority order then first come (the order of one tenant's heap)."""
    entries = sorted(entry for heap in state.ready_queue.heaps.values() for entry in heap)
    out: list[Queued] = []
    seen: set[str] = set()
    for prio, _, job_id in entries:
        job = state.queued.get(job_id)
        if (job is None or job_id in seen or job.status is not S.PENDING or -prio != job.priority or job.not_before
                or job.held or state.waiting.is_waiting(job_id)):
            continue
        seen.add(job_id)
        out.append(job)
    return out


def explain(state: QueueState, ids: Iterable[str], cluster: Cluster, now: float,
            default_limit: float) -> dict[str, Pending]:
    """`Pending` for each of `ids` this queue holds as pending (others are left out)."""
    wanted = [i for i in ids if i in state.queued or i in state.dispatched]
    if not wanted:
        return {}
    order = ready_order(state)
    place = {job.id: i for i, job in enumerate(order)}
    estimated = starts(((j.id, j.need, j.timeout or default_limit) for j in order), cluster, now, ESTIMATED)
    out = {}
    for job_id in wanted:
        if job_id in state.dispatched:
            d = state.dispatched[job_id]
            if not d.started:
                out[job_id] = Pending(code=P.STARTING, text="handed to Ray, starting")
            continue
        job = state.queued[job_id]
        if job.status is not S.PENDING:
            continue
        why = _why(state, job, cluster, now, place.get(job_id), len(order), estimated.get(job_id))
        if job_id in state.arrays and why.code is P.PRIORITY:  # an array waits as its next task does
            why = _array(state, state.arrays[job_id], cluster, now, place, len(order), estimated) or why
        out[job_id] = why
    return out


def _array(state: QueueState, run: ArrayRun, cluster: Cluster, now: float, place: dict[str, int], ready: int,
           estimated: dict[str, float]) -> Pending | None:
    """Why an array that may make tasks has none running: its throttle, or what its first waiting
    task waits for."""
    throttle = run.job.array.throttle if run.job.array else None
    if throttle is not None and len(run.active) >= throttle:
        return Pending(code=P.ARRAY_THROTTLE, text=f"{len(run.active)} tasks made of {throttle} at once (%{throttle})")
    task = next((state.queued[t] for t in sorted(run.active, key=lambda t: state.queued[t].seq if t in state.queued
                                                 else 0) if t in state.queued), None)
    if task is None:
        return None
    why = _why(state, task, cluster, now, place.get(task.id), ready, estimated.get(task.id))
    return why.model_copy(update={"text": f"task {task.id}: {why.text}"})


def _why(state: QueueState, job: Queued, cluster: Cluster, now: float, position: int | None, ready: int,
         estimated: float | None) -> Pending:
    if job.held:
        return Pending(code=P.HELD, text="held by user: sage-ops release " + job.id)
    if job.id in state.stuck:
        return Pending(code=P.DEPENDENCY_NEVER_SATISFIED, text=state.stuck[job.id][1])
    if state.waiting.is_waiting(job.id):
        deps = sorted(state.waiting.blockers.get(job.id, ()))
        more = f" and {len(deps) - 3} more" if len(deps) > 3 else ""
        return Pending(code=P.DEPENDENCY, text=f"waits for {', '.join(deps[:3])}{more}")
    if job.not_before and job.not_before > now:
        what = "retry after backoff" if job.attempts_made else "begins"
        return Pending(code=P.BEGIN_TIME, text=f"{what} at {moment_text(job.not_before)}",
                       estimated_start=when(job.not_before))
    line = {"position": None if position is None else position + 1, "of": ready,
            "estimated_start": when(estimated) if estimated is not None else None}
    if (quota := state.over_quota(job)) is not None:
        return Pending(code=quota[0], text=quota[1], **line)
    totals = cluster.totals()
    if not any(fits(job.need, t) for t in totals.values()):
        pools = [name for name, offer in state.capacity.pools if pool_fits(job.need, offer)]
        if pools:
            return Pending(code=P.RESOURCES, text=f"needs {fmt(job.need)}: no node up holds it; pool {pools[0]} "
                           "adds one (sage-ops pools)", **line)
        return Pending(code=P.NODE_DRAINING, text=f"needs {fmt(job.need)}: only draining nodes could hold it")
    reservation = state.reservation
    if reservation is not None and reservation.job_id == job.id:
        largest = max(cluster.free.values(), key=lambda f: f.get("CPU", 0.0), default={})
        have = {k: max(0.0, largest.get(k, 0.0)) for k in job.need}
        held = f"; reserved from {moment_text(reservation.at)}" if math.isfinite(reservation.at) else ""
        if victims := sorted(d.id for d in state.dispatched.values() if d.preempting == job.id):
            held += f"; preempting {', '.join(victims)}"
        return Pending(code=P.RESOURCES, text=f"needs {fmt(job.need)}, largest free {fmt(have)}{held}", **line)
    if reservation is not None and cluster.fitting(job.need) is not None:
        hint = "" if job.timeout else " (a --timeout lets a short job start around it)"
        return Pending(code=P.RESERVATION, text=f"would delay {reservation.job_id}, which is reserved the "
                       f"resources{hint}", **line)
    if position == 0 and cluster.fitting(job.need) is None:
        return Pending(code=P.RESOURCES, text=f"needs {fmt(job.need)}; no node has room yet", **line)
    return Pending(code=P.PRIORITY, text="jobs ahead of it start first", **line)


def when(t: float) -> datetime | None:
    return datetime.fromtimestamp(t, timezone.utc) if math.isfinite(t) else None

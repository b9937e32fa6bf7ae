"""What happens to jobs as attempts fail and jobs end: a failed attempt's retry or failure, the
jobs that wait on an ended one (freed or cancelled in cascade), cancels and the kills they send,
and the waiters of `wait`. Shared by admission, dispatch, reconcile and the operators' actions,
so each rule is stated once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from ...arrays import array_of
from ...errors import Conflict, NotFound, SageOpsError
from ...lifecycle import JobStatus, Transition, amend, is_terminal, transition
from ...schemas import Condition
from ...views import JobView
from ..storage import job_graph
from ..storage import store as st
from ..storage.logs import LogStore
from .execution_graph import met
from .ports import Backend
from .queue_items import Queued
from .queue_state import TermPart

log = logging.getLogger(__name__)
RECHECK_AFTER = 15.0  # seconds past kill_grace before a cancelled job still in flight is stopped again
S = JobStatus


KEPT = "kept waiting (--kill-on-invalid-dep no)"  # a job a dependency can never satisfy, by its wish


def dependency_unmet(dep: str, status: JobStatus, name: str, condition: Condition = "ok") -> str:
    """Why a job is cancelled: a dependency ended as its condition can never accept."""
    if condition == "notok":
        return f"dependency {dep} ({name}) ended {status.value}; after-notok waits for it to fail"
    return f"dependency {dep} ({name}) ended {status.value}"


def failure(job: Queued, old: JobStatus, attempt: int, reason: str, t: float, **fields: Any) -> Transition:
    """A failed attempt: back to PENDING after the backoff if retries are left, else FAILED."""
    policy = job.spec.retry_policy
    run = attempt - job.retry_base
    if run <= policy.max_retries:
        delay = policy.delay(run)
        return transition(job.id, old, S.PENDING,
                          f"attempt {attempt} failed ({reason}); retry {run} of {policy.max_retries} in {delay:g}s",
                          attempt, retry=True, not_before=t + delay, attempts_made=attempt, **fields)
    return transition(job.id, old, S.FAILED, reason, attempt, ended_at=t, **fields)


@dataclass(eq=False)
class Outcomes(TermPart):
    backend: Backend
    logs: LogStore

    def requeue(self, job: Queued, tr: Transition) -> None:
        """After a committed retry transition: the job waits for its backoff."""
        job.status, job.attempts_made = S.PENDING, tr.attempt
        job.not_before = tr.fields.get("not_before")
        job.retry_base = tr.fields.get("retry_base", job.retry_base)  # a preemption is not a failed attempt
        self.state.queued[job.id] = job
        self.state.queue(job)

    async def enqueue(self, jobs: list[Queued]) -> None:
        """Pending jobs (recovered or retried by a user): wait for unfinished dependencies, or
        cancel them if one ended badly; queue the rest."""
        if not jobs:
            return
        ids = [j.id for j in jobs]

        def q(conn: Connection) -> tuple[dict[str, list[str]], dict[str, tuple[JobStatus, str]]]:
            deps = job_graph.dependencies_of(conn, ids)
            return deps, st.statuses_of(conn, {d for ds in deps.values() for d in ds})

        deps, known = await self.store.read(q)
        doomed: list[tuple[Queued, str, str]] = []
        for job in jobs:
            self.state.stuck.pop(job.id, None)
            mine = deps.get(job.id)
            if not mine:
                self.state.queue(job)
                continue
            spec, unfinished = job.spec, []  # decoded only for the conditions of its dependencies
            for d in mine:
                ok = met(spec.condition(d), known[d][0]) if d in known else None
                if ok is False:
                    doomed.append((job, d, dependency_unmet(d, *known[d], spec.condition(d))))
                    break
                if ok is None and d in known:
                    unfinished.append(d)
            else:
                if not self.state.waiting.add(job.id, unfinished, spec.conditions()):
                    self.state.queue(job)
        await self.stick([(j.id, d, why) for j, d, why in doomed if not j.kill_on_invalid_dep])
        for job, _, reason in doomed:
            if job.kill_on_invalid_dep:
                await self.cancel_ids([job.id], reason)

    async def stick(self, items: list[tuple[str, str, str]]) -> None:
        """(job, dependency, why): jobs a dependency can never satisfy that asked to be kept
        (--kill-on-invalid-dep no). They stay PENDING, audited with why, until their dependencies
        are updated, that dependency is retried, or they are cancelled."""
        if not items:
            return
        trs = []
        for job_id, dep, why in items:
            self.state.waiting.forget(job_id)
            self.state.stuck[job_id] = (dep, why)
            trs.append(amend(job_id, S.PENDING, f"{why}; {KEPT}"))
        now = self.clock.now()
        await self.store.write(lambda c: st.apply_transitions(c, trs, now))

    async def attempts_failed(self, items: list[tuple[Queued, int]], reason: str, now: float) -> None:
        """Attempts the dispatcher lost (restart, crash). A started one is a failed attempt,
        retried by policy; one that never started goes back to the queue as it was."""
        def op(conn: Connection) -> list[Transition | str]:
            out: list[Transition | str] = []
            for job, attempt in items:
                status = st.current_status(conn, job.id)
                if status is S.PENDING:
                    out.append("requeue")
                    continue
                tr = failure(job, S.RUNNING, attempt, reason, now)
                if status is S.RUNNING and st.apply_transitions(conn, [tr], now)[0]:
                    st.update_attempt(conn, job.id, attempt, {"status": S.FAILED.value, "reason": reason,
                                                               "ended_at": now})
                    out.append(tr)
                else:
                    out.append("gone")  # it ended meanwhile (cancelled): nothing to do
            return out

        ended = []
        outcome = await self.store.write(op)
        for (job, _), tr in zip(items, outcome):
            self.state.queued.pop(job.id, None)
            if tr == "requeue":
                job.status = S.PENDING
                self.state.queued[job.id] = job
                self.state.queue(job)
            elif isinstance(tr, Transition) and tr.new is S.PENDING:
                self.requeue(job, tr)
            elif isinstance(tr, Transition):
                ended.append((job.id, tr.new))
        await self.finish(ended)

    async def finish(self, ended: Iterable[tuple[str, JobStatus]]) -> list[str]:
        """Jobs that reached a terminal state (each reported once, by whoever moved it): wake
        their waiters, free the dependents whose condition is met, cancel those whose condition
        never can be, and so on down the graph (a cancelled job is an ended one too). A job
        cancelled in cascade passes its reason on, so the whole tree names the first cause.
        Returns the ids cancelled as a consequence."""
        state = self.state
        cascaded: list[str] = []
        t0 = time.perf_counter()
        todo: deque[tuple[str, JobStatus, str | None]] = deque((j, s, None) for j, s in ended)
        while todo:
            job_id, status, cause = todo.popleft()
            state.active -= 1
            state.stuck.pop(job_id, None)
            self.counters.ended[status.value] = self.counters.ended.get(status.value, 0) + 1
            for fut in state.done_waiters.pop(job_id, []):
                if not fut.done():
                    fut.set_result(None)
            self.logs.wake(job_id)
            if job_id in state.arrays:  # an array ended (its last task did, or it was cancelled)
                del state.arrays[job_id]
                state.queued.pop(job_id, None)
            elif (array := await self._task_ended(job_id, status)) is not None:
                todo.append((*array, None))
            freed, doomed = state.waiting.ended(job_id, status)
            for child in freed:
                job = state.queued.get(child)
                if job is not None and job.status is S.PENDING:
                    state.queue(job)
            if not doomed:
                continue
            label = job_id if cause is not None else await self._name(job_id)
            kept = {child for child, _ in doomed if (q := state.queued.get(child)) and not q.kill_on_invalid_dep}
            await self.stick([(child, job_id, dependency_unmet(job_id, status, label, c))
                              for child, c in doomed if child in kept])
            for condition in ("ok", "notok"):
                ids = [child for child, c in doomed if c == condition and child not in kept]
                if not ids:
                    continue
                why = cause if cause is not None and condition == "ok" else \
                    dependency_unmet(job_id, status, label, condition)
                outcome, kills = await self._cancel(ids, why, strict=False)
                done = [j for j in outcome if isinstance(j, str)]
                cascaded += done
                todo.extend((j, S.CANCELLED, why) for j in done)
                if kills:
                    await asyncio.gather(*kills)
        self.counters.decision_seconds += time.perf_counter() - t0  # dependency bookkeeping is scheduling work
        state.wake.set()
        return cascaded

    async def _task_ended(self, job_id: str, status: JobStatus) -> tuple[str, JobStatus] | None:
        """An array's task ended: count it, make the next, and end the array after its last task
        (then the array's id and outcome, to finish as any ended job)."""
        run = self.state.arrays.get(array_of(job_id) or "")
        if run is None or job_id not in run.active:
            return None
        run.active.discard(job_id)
        run.failed += status in (S.FAILED, S.REJECTED)
        run.cancelled += status is S.CANCELLED
        if not run.over():
            self.state.arrays_due.add(run.id)
            return None
        final, now = run.outcome(), self.clock.now()
        why = f"{len(run.indices) - run.failed - run.cancelled} of {len(run.indices)} tasks completed"

        def op(conn: Connection) -> bool:
            if st.current_status(conn, run.id) in (S.SUBMITTED, S.PENDING) and final is not S.CANCELLED:
                st.move_to(conn, run.id, S.RUNNING, "its tasks ran", 0, now)
            return st.move_to(conn, run.id, final, why, 0, now, ended_at=now)

        return (run.id, final) if await self.store.write(op) else None

    async def _name(self, job_id: str) -> str:
        """How a reason names a job: its name (its id when it has none)."""
        known = await self.store.read(lambda c: st.statuses_of(c, [job_id]))
        return known[job_id][1] if job_id in known else job_id

    async def cancel_ids(self, ids: list[str], reason: str,
                         strict: bool = False) -> tuple[list[str | SageOpsError], list[str]]:
        """Cancel `ids`; returns each one's outcome and the dependents cancelled with them."""
        outcome, kills = await self._cancel(ids, reason, strict)
        done = [j for j in outcome if isinstance(j, str)]
        tasks = [t for j in done if (run := self.state.arrays.get(j)) is not None for t in sorted(run.active)]
        if tasks:  # an array's cancel is its tasks' too: reported with what it cascaded to
            more, also = await self._cancel(tasks, reason, strict=False)
            tasks, kills = [t for t in more if isinstance(t, str)], kills + also
        cascaded = await self.finish((j, S.CANCELLED) for j in done + tasks)
        if kills:
            await asyncio.gather(*kills)
        return outcome, tasks + cascaded

    async def _cancel(self, ids: list[str], reason: str,
                      strict: bool) -> tuple[list[str | SageOpsError], list[Awaitable[None]]]:
        """One write: `ids` CANCELLED (each one's outcome), and the kills of those in flight, to await."""
        now = self.clock.now()

        def op(conn: Connection) -> list[str | SageOpsError]:
            out: list[str | SageOpsError] = []
            for job_id in ids:
                try:
                    moved = st.move_to(conn, job_id, S.CANCELLED, reason, 0, now, ended_at=now, strict=strict)
                    out.append(job_id if moved else Conflict(f"job {job_id} has ended"))
                except (NotFound, Conflict) as exc:
                    out.append(exc)
            return out

        outcome = await self.store.write(op)
        kills: list[Awaitable[None]] = []
        for job_id in outcome:
            if not isinstance(job_id, str):
                continue
            self.state.queued.pop(job_id, None)
            d = self.state.dispatched.get(job_id)
            if d is not None:
                d.cancelling = True
                self.state.cancels[job_id] = time.monotonic()
                kills.append(self.kill(job_id, self.cfg.jobmanager.kill_grace))
        return outcome, kills

    async def kill(self, job_id: str, grace: float) -> None:
        """Stop a dispatched job's process group; a failure is logged (the poll loop asks again)."""
        try:
            await self.backend.cancel(job_id, grace)
        except Exception as exc:  # noqa: BLE001 - Ray hiccup: recheck_cancels retries
            log.warning("could not stop job %s yet: %s", job_id, str(exc).splitlines()[0][:300])

    def recheck_cancels(self, inflight: dict[str, int]) -> None:
        """A cancel is one message to the dispatcher; if a cancelled job is still in flight well
        after its grace (a lost message, an interrupt swallowed in the task), ask again with no
        grace: a cancelled job must not run on. Runs on every poll, so it looks only at the jobs
        with a cancel outstanding, not at everything in flight."""
        cancels = self.state.cancels
        now, late = time.monotonic(), self.cfg.jobmanager.kill_grace + RECHECK_AFTER
        for job_id, sent in list(cancels.items()):
            if job_id not in inflight or job_id not in self.state.dispatched:
                del cancels[job_id]  # it ended
            elif now - sent > late:
                cancels[job_id] = now
                log.warning("job %s still runs %.0f s after its cancel: stopping it again", job_id, late)
                asyncio.get_running_loop().create_task(self.kill(job_id, 0))

    async def wait(self, job_id: str, timeout: float) -> JobView:
        """The job once it has ended, or as it is after `timeout` seconds."""
        waiters = self.state.done_waiters
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.setdefault(job_id, []).append(fut)
        try:
            view = await self.store.read(lambda c: st.get_job(c, job_id))
            if not is_terminal(view.status) and timeout > 0:
                try:
                    await asyncio.wait_for(asyncio.shield(fut), timeout)
                except asyncio.TimeoutError:
                    pass
                view = await self.store.read(lambda c: st.get_job(c, job_id))
            return view
        finally:
            mine = waiters.get(job_id, [])
            if fut in mine:
                mine.remove(fut)
                if not mine:
                    waiters.pop(job_id, None)

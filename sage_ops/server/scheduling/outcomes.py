"""What happens to jobs as attempts fail and jobs end: a failed attempt's retry or failure, the
jobs that wait on an ended one (freed or cancelled in cascade), cancels and the kills they send,
and the waiters of `wait`. Shared by admission, dispatch, reconcile and the operators' actions,
so each rule is stated once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from ...errors import Conflict, NotFound, SageOpsError
from ...lifecycle import JobStatus, Transition, is_terminal, transition
from ...schemas import JobView
from ..storage import store as st
from ..storage.logs import LogStore
from .execution_graph import FAILED_DEP
from .ports import Backend
from .queue_items import Queued
from .queue_state import TermPart

log = logging.getLogger(__name__)
RECHECK_AFTER = 15.0  # seconds past kill_grace before a cancelled job still in flight is stopped again
S = JobStatus


def dependency_failed(dep: str, status: JobStatus, name: str) -> str:
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
        self.state.queued[job.id] = job
        self.state.queue(job)

    async def enqueue(self, jobs: list[Queued]) -> None:
        """Pending jobs (recovered or retried by a user): wait for unfinished dependencies, or
        cancel them if one ended badly; queue the rest."""
        if not jobs:
            return
        ids = [j.id for j in jobs]

        def q(conn: Connection) -> tuple[dict[str, list[str]], dict[str, tuple[JobStatus, str]]]:
            deps = st.dependencies_of(conn, ids)
            return deps, st.statuses_of(conn, {d for ds in deps.values() for d in ds})

        deps, known = await self.store.read(q)
        doomed: dict[str, str] = {}
        for job in jobs:
            mine = deps.get(job.id, [])
            bad = next((d for d in mine if d in known and known[d][0] in FAILED_DEP), None)
            if bad is not None:
                doomed[job.id] = dependency_failed(bad, *known[bad])
            elif not self.state.waiting.add(job.id, [d for d in mine if d in known and known[d][0] is not S.COMPLETED]):
                self.state.queue(job)
        for job_id, reason in doomed.items():
            await self.cancel_ids([job_id], reason)

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
        their waiters, free their dependents, cancel the dependents of failures. Returns the ids
        cancelled as a consequence."""
        state = self.state
        cascaded: list[str] = []
        t0 = time.perf_counter()
        for job_id, status in ended:
            state.active -= 1
            self.counters.ended[status.value] = self.counters.ended.get(status.value, 0) + 1
            for fut in state.done_waiters.pop(job_id, []):
                if not fut.done():
                    fut.set_result(None)
            self.logs.wake(job_id)
            if status is S.COMPLETED:
                for child in state.waiting.completed(job_id):
                    job = state.queued.get(child)
                    if job is not None and job.status is S.PENDING:
                        state.queue(job)
                state.waiting.forget(job_id)
            else:
                doomed = state.waiting.doomed(job_id)
                if doomed:
                    name = await self.store.read(lambda c, j=job_id: st.statuses_of(c, [j]))
                    reason = dependency_failed(job_id, status, name.get(job_id, (status, job_id))[1])
                    done, more = await self.cancel_ids(doomed, reason)
                    cascaded += [j for j in done if isinstance(j, str)] + more
        self.counters.decision_seconds += time.perf_counter() - t0  # dependency bookkeeping is scheduling work
        state.wake.set()
        return cascaded

    async def cancel_ids(self, ids: list[str], reason: str,
                         strict: bool = False) -> tuple[list[str | SageOpsError], list[str]]:
        """Cancel `ids`; returns each one's outcome and the dependents cancelled with them."""
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
        done = [r for r in outcome if isinstance(r, str)]
        kills = []
        for job_id in done:
            self.state.queued.pop(job_id, None)
            d = self.state.dispatched.get(job_id)
            if d is not None:
                d.cancelling = True
                self.state.cancels[job_id] = time.monotonic()
                kills.append(self.kill(job_id, self.cfg.jobmanager.kill_grace))
        if not strict:  # a cascade already holds every descendant: nothing more to doom
            for job_id in done:
                self.state.waiting.forget(job_id)
        cascaded = await self.finish((j, S.CANCELLED) for j in done)
        if kills:
            await asyncio.gather(*kills)
        return outcome, cascaded

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

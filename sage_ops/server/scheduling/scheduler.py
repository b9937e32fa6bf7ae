"""The queue: dependencies, priorities, tenants' quotas and fair share, retries with backoff,
dispatch of what the cluster can start now, what happens when a job ends, and start-up recovery.
A submit's admission is in `admission.py`, the quota arithmetic in `quotas.py`; the events that
come back from Ray become transitions in `reconcile.py`; operators' actions (bulk cancel/retry,
priority, graph) are in `operations.py`.

Rules live here once; the API only validates and delegates. Dispatch is event driven (a submit,
a job end, a due retry wakes it), never a fixed sleep. Every decision touches only the jobs
involved: the ready queues are heaps, the dependency index a map, both rebuilt at start-up.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection

from ...access import Quotas
from ...config import Config
from ...errors import Conflict, NotFound, SageOpsError
from ...lifecycle import ACTIVE, JobStatus, Transition, amend, is_terminal, transition
from ...schemas import JobKind, JobSpec, JobView
from ..backend import transit
from ..backend.ray_backend import RayBackend
from ..storage import accounts
from ..storage import store as st
from ..storage.logs import LogStore
from ..storage.sealing import Sealer
from . import admission as sub
from .admission import Submissions
from .capacity import Capacity
from .execution_graph import FAILED_DEP, Waiting
from .operations import Operations
from .queue_items import Clock, Dispatched, Queued
from .quotas import FairQueue, Tally, over_quota
from .reconcile import RayEvents
from .run_as import RunAs

log = logging.getLogger(__name__)
RECHECK_AFTER = 15.0  # seconds past kill_grace before a cancelled job still in flight is stopped again
S = JobStatus


class Scheduler(RayEvents, Operations, Submissions):
    def __init__(self, cfg: Config, store: st.Store, backend: RayBackend, logs: LogStore,
                 clock: Clock | None = None, *, run_as: RunAs | None = None, sealer: Sealer | None = None) -> None:
        """`run_as` and `sealer` default to the ones `cfg` describes; a test passes its own. One
        Scheduler lives as long as the daemon: it holds a queue only during a term of leadership
        (`begin_term` .. `end_term`), so its holders never see it replaced."""
        super().__init__()
        self.cfg = cfg
        self.store = store
        self.backend = backend
        self.logs = logs
        self.clock = clock or Clock()
        self.sealer = sealer or Sealer(cfg.security.secret_key_file)
        self.run_as = run_as or RunAs(cfg.security.switch_users, cfg.security.sandbox)
        self.hide: dict[JobKind, list[str]] = {}  # per kind: what the daemon's own jobs must not see
        self.decision_seconds = 0.0  # time spent choosing what to run (stats, benchmarks)
        self.decisions = 0
        self.ended_counts: dict[str, int] = {}  # jobs ended since start, by status (metrics)
        self.submitted_total = 0  # jobs accepted since start (metrics)
        self.started_total = 0  # attempts that started running since start (metrics)
        self._new_term()

    def _new_term(self) -> None:
        """The queue of one term of leadership, empty: a daemon that does not lead holds none."""
        self._new_reconcile_term()
        self.queued: Tally[Queued] = Tally()  # not in Ray: waiting, in backoff or runnable
        self.ready_queue = FairQueue()  # runnable now, per tenant
        self.quotas: dict[str, Quotas] = {}
        self.later: list[tuple[float, int, str]] = []  # (not_before, seq, id): retries in backoff
        self.waiting = Waiting()
        self.dispatched: Tally[Dispatched] = Tally()
        self.cancels: dict[str, float] = {}  # job id -> time.monotonic() of its last kill asked for
        self.capacity = Capacity(self.backend, self.cfg.jobmanager.prefetch)
        self.active = 0
        self.seq = 0
        self.ready = False
        self.wake = asyncio.Event()
        self._done_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    def wake_up(self) -> None:
        """Something outside the queue changed (a node joined or left): look at the queue again."""
        self.wake.set()

    async def begin_term(self) -> None:
        """This daemon leads: the queue as the database holds it (before Ray is connected)."""
        self._new_term()
        await self.load()

    async def end_term(self) -> None:
        """Another daemon leads: stop dispatching and forget the queue (its writes are fenced)."""
        await self.stop()
        self._new_term()

    # -- start-up ----------------------------------------------------------------------------
    async def load(self) -> None:
        """Read the active jobs from the database (before Ray is connected)."""
        def q(conn: Connection) -> tuple[list[Any], int, str | None, list[Any]]:
            return (st.active_jobs(conn, [s.value for s in ACTIVE]), st.max_seq(conn),
                    st.get_meta(conn, self.CURSOR_KEY), accounts.tenants(conn))

        rows, self.seq, cursor, tenants = await self.store.read(q)
        self.set_quotas({t.name: accounts.quotas_of(t) for t in tenants})
        self.load_cursor(cursor)
        for r in rows:
            self.queued[r.id] = Queued(r.id, r.seq, JobSpec.model_validate_json(r.spec), S(r.status), r.attempts_made,
                                       r.retry_base or 0, r.priority, r.not_before)
        self.active = len(rows)

    async def recover(self) -> None:
        """Once Ray is connected: reattach to in-flight work, fail what was lost, admit the rest,
        rebuild the dependency index and the queues."""
        await self.reattach()
        lost = [j for j in list(self.queued.values()) if j.status is S.RUNNING]
        if lost:
            now = self.clock.now()
            await self._attempts_failed([(j, j.attempts_made) for j in lost],
                                        "lost: the Ray dispatcher no longer knows this job", now)
        await self._admit([j for j in self.queued.values() if j.status is S.SUBMITTED])
        await self._enqueue([j for j in self.queued.values() if j.status is S.PENDING])
        self.ready = True
        self.wake.set()

    async def _admit(self, jobs: list[Queued]) -> None:
        """Jobs submitted while Ray was unreachable: check them against the cluster now."""
        if not jobs:
            return
        now = self.clock.now()
        nodes = self.backend.node_totals()
        trs: list[Transition] = []
        for job in jobs:
            reason = self.capacity.never_fits(job.need, nodes)
            trs.append(transition(job.id, S.SUBMITTED, S.REJECTED if reason else S.PENDING, reason or "admitted",
                                  **({"ended_at": now} if reason else {})))
        applied = await self.store.write(lambda c: st.apply_transitions(c, trs, now))
        ended = []
        for tr, ok in zip(trs, applied):
            if ok:
                self.queued[tr.job_id].status = tr.new
                if tr.new is S.REJECTED:
                    ended.append((self.queued.pop(tr.job_id).id, S.REJECTED))
        await self._finish(ended)

    async def _enqueue(self, jobs: list[Queued]) -> None:
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
                doomed[job.id] = sub.dependency_failed(bad, *known[bad])
            elif not self.waiting.add(job.id, [d for d in mine if d in known and known[d][0] is not S.COMPLETED]):
                self._queue(job)
        for job_id, reason in doomed.items():
            await self._cancel_ids([job_id], reason)

    def _queue(self, job: Queued) -> None:
        if job.not_before and job.not_before > self.clock.now():
            heapq.heappush(self.later, (job.not_before, job.seq, job.id))
        else:
            job.not_before = None
            self.ready_queue.push(job.tenant, job.priority, job.seq, job.id)
        self.wake.set()

    # -- dispatch ----------------------------------------------------------------------------
    async def dispatch_loop(self) -> None:
        while not self._stopping:
            timeout = max(0.0, self.later[0][0] - self.clock.now()) if self.later else None
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            await self.dispatch_once()

    async def dispatch_once(self) -> list[dict[str, Any]]:
        """One pass: release the retries now due, hand what can start to the backend (the batch)."""
        if not self.ready or not self.backend.connected:
            return []
        t0 = time.perf_counter()
        self._due()
        batch = self._take_runnable()
        self.decision_seconds += time.perf_counter() - t0
        self.decisions += len(batch)
        if not batch:
            return batch
        try:
            await self.backend.submit(batch)
            return batch
        except Exception as exc:  # noqa: BLE001 - Ray trouble: put the jobs back, try later
            log.error("dispatch of %d jobs failed: %s", len(batch), exc)
            for item in batch:
                d = self.dispatched.pop(item["id"])
                self.capacity.release(d.node, d.need)
                self.queued[d.id] = d.job
                self._queue(d.job)
            await asyncio.sleep(1)
            self.wake.set()
            return []

    def _due(self) -> None:
        now = self.clock.now()
        while self.later and self.later[0][0] <= now:
            _, seq, job_id = heapq.heappop(self.later)
            job = self.queued.get(job_id)
            if job is not None and job.status is S.PENDING:
                job.not_before = None
                self.ready_queue.push(job.tenant, job.priority, seq, job_id)

    def _take_runnable(self) -> list[dict[str, Any]]:
        """Within a tenant, highest priority first, FIFO within a priority; across tenants, the
        least served first (quotas.py). A tenant at its quota waits, without holding up the
        others. The job chosen next reserves its resources: nothing behind it jumps ahead, so a
        big job is never starved by small ones."""
        batch = []
        at_quota: set[str | None] = set()
        while (tenant := self.ready_queue.order(self.dispatched, self.quotas, at_quota)) is not False:
            heap = self.ready_queue.heaps[tenant]
            prio, _, job_id = heap[0]
            job = self.queued.get(job_id)
            if (job is None or job.status is not S.PENDING or -prio != job.priority or job.not_before
                    or self.waiting.is_waiting(job_id)):
                heapq.heappop(heap)  # stale: gone, re-prioritised, delayed or waiting
                continue
            if tenant is not None and tenant in self.quotas:
                res = job.spec.resources
                why = over_quota(tenant, self.quotas[tenant], self.dispatched.use[tenant], res.cpu, res.gpu)
                if why is not None:
                    at_quota.add(tenant)
                    self._blocked(job, why)
                    continue
            node = self.capacity.charge(job.need)
            if node is None:
                break
            heapq.heappop(heap)
            del self.queued[job_id]
            attempt = job.attempts_made + 1
            self.dispatched[job_id] = Dispatched(job, attempt, node)
            timeout = job.spec.timeout or self.cfg.jobmanager.job_timeout
            opts: dict[str, Any] = {"timeout": timeout, "kill_grace": self.cfg.jobmanager.kill_grace,
                                    "max_log_bytes": self.cfg.storage.max_log_bytes,
                                    "max_result_bytes": self.cfg.storage.max_result_bytes,
                                    "run_as": job.spec.run_as}
            if not job.spec.run_as:
                kind = job.spec.kind
                if kind not in self.hide:
                    self.hide[kind] = self.run_as.hidden(self.cfg, kind)
                opts["hide"] = self.hide[kind]
            if job.spec.secret_env:
                try:
                    opts["secret_env"] = transit.seal(self.sealer.unseal(job.spec), job_id, attempt)
                except (SageOpsError, transit.TransitError) as exc:
                    opts["secret_error"] = exc.message  # the attempt fails, saying why
            batch.append({"id": job_id, "attempt": attempt, "resources": job.spec.resources.model_dump(),
                          "spec": job.spec.model_dump(mode="json"), "opts": opts})
        return batch

    # -- attempts and jobs ending ------------------------------------------------------------
    def failure(self, job: Queued, old: JobStatus, attempt: int, reason: str, t: float,
                **fields: Any) -> Transition:
        """A failed attempt: back to PENDING after the backoff if retries are left, else FAILED."""
        policy = job.spec.retry_policy
        run = attempt - job.retry_base
        if run <= policy.max_retries:
            delay = policy.delay(run)
            return transition(job.id, old, S.PENDING,
                              f"attempt {attempt} failed ({reason}); retry {run} of {policy.max_retries} in {delay:g}s",
                              attempt, retry=True, not_before=t + delay, attempts_made=attempt, **fields)
        return transition(job.id, old, S.FAILED, reason, attempt, ended_at=t, **fields)

    def requeue(self, job: Queued, tr: Transition) -> None:
        """After a committed retry transition: the job waits for its backoff."""
        job.status, job.attempts_made = S.PENDING, tr.attempt
        job.not_before = tr.fields.get("not_before")
        self.queued[job.id] = job
        self._queue(job)

    async def _attempts_failed(self, items: list[tuple[Queued, int]], reason: str, now: float) -> None:
        """Attempts the dispatcher lost (restart, crash). A started one is a failed attempt,
        retried by policy; one that never started goes back to the queue as it was."""
        def op(conn: Connection) -> list[Transition | str]:
            out: list[Transition | str] = []
            for job, attempt in items:
                status = st.current_status(conn, job.id)
                if status is S.PENDING:
                    out.append("requeue")
                    continue
                tr = self.failure(job, S.RUNNING, attempt, reason, now)
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
            self.queued.pop(job.id, None)
            if tr == "requeue":
                job.status = S.PENDING
                self.queued[job.id] = job
                self._queue(job)
            elif isinstance(tr, Transition) and tr.new is S.PENDING:
                self.requeue(job, tr)
            elif isinstance(tr, Transition):
                ended.append((job.id, tr.new))
        await self._finish(ended)

    async def _finish(self, ended: Iterable[tuple[str, JobStatus]]) -> list[str]:
        """Jobs that reached a terminal state (each reported once, by whoever moved it): wake
        their waiters, free their dependents, cancel the dependents of failures. Returns the ids
        cancelled as a consequence."""
        cascaded: list[str] = []
        t0 = time.perf_counter()
        for job_id, status in ended:
            self.active -= 1
            self.ended_counts[status.value] = self.ended_counts.get(status.value, 0) + 1
            for fut in self._done_waiters.pop(job_id, []):
                if not fut.done():
                    fut.set_result(None)
            self.logs.wake(job_id)
            if status is S.COMPLETED:
                for child in self.waiting.completed(job_id):
                    job = self.queued.get(child)
                    if job is not None and job.status is S.PENDING:
                        self._queue(job)
                self.waiting.forget(job_id)
            else:
                doomed = self.waiting.doomed(job_id)
                if doomed:
                    name = await self.store.read(lambda c, j=job_id: st.statuses_of(c, [j]))
                    reason = sub.dependency_failed(job_id, status, name.get(job_id, (status, job_id))[1])
                    done, more = await self._cancel_ids(doomed, reason)
                    cascaded += [j for j in done if isinstance(j, str)] + more
        self.decision_seconds += time.perf_counter() - t0  # dependency bookkeeping is scheduling work
        self.wake.set()
        return cascaded

    # -- operator actions --------------------------------------------------------------------
    async def _cancel_ids(self, ids: list[str], reason: str,
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
            self.queued.pop(job_id, None)
            d = self.dispatched.get(job_id)
            if d is not None:
                d.cancelling = True
                self.cancels[job_id] = time.monotonic()
                kills.append(self.kill(job_id, self.cfg.jobmanager.kill_grace))
        if not strict:  # a cascade already holds every descendant: nothing more to doom
            for job_id in done:
                self.waiting.forget(job_id)
        cascaded = await self._finish((j, S.CANCELLED) for j in done)
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
        now, late = time.monotonic(), self.cfg.jobmanager.kill_grace + RECHECK_AFTER
        for job_id, sent in list(self.cancels.items()):
            if job_id not in inflight or job_id not in self.dispatched:
                del self.cancels[job_id]  # it ended
            elif now - sent > late:
                self.cancels[job_id] = now
                log.warning("job %s still runs %.0f s after its cancel: stopping it again", job_id, late)
                asyncio.get_running_loop().create_task(self.kill(job_id, 0))

    # -- waiting -----------------------------------------------------------------------------
    async def wait(self, job_id: str, timeout: float) -> JobView:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done_waiters.setdefault(job_id, []).append(fut)
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
            waiters = self._done_waiters.get(job_id, [])
            if fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    self._done_waiters.pop(job_id, None)

    def _blocked(self, job: Queued, why: str) -> None:
        """Show why a job waits (once per reason): its reason says which quota holds it."""
        if job.blocked == why:
            return
        job.blocked = why
        now = self.clock.now()
        task = asyncio.get_running_loop().create_task(
            self.store.write(lambda c: st.apply_transitions(c, [amend(job.id, S.PENDING, why)], now)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def set_quotas(self, quotas: dict[str, Quotas]) -> None:
        self.quotas = quotas
        self.wake.set()

    def usage(self, tenant: str) -> dict[str, Any]:
        run = self.dispatched.use.get(tenant)
        queued = self.queued.use.get(tenant)
        return {"running_jobs": run.jobs if run else 0, "cpu_in_use": round(run.cpu, 6) if run else 0.0,
                "gpu_in_use": round(run.gpu, 6) if run else 0.0, "queued_jobs": queued.jobs if queued else 0}

    def queue_depth(self, tenant: str | None = None) -> int:
        return sum(1 for j in self.queued.values() if j.status is S.PENDING and (tenant is None or j.tenant == tenant))

    async def run(self) -> None:
        self._tasks = [asyncio.create_task(self.dispatch_loop()), asyncio.create_task(self.poll_loop())]

    async def stop(self) -> None:
        self._stopping = True
        self.wake.set()
        await self.drain()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

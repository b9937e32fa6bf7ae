"""The queue of this daemon: one Scheduler for the process's life, holding a queue only during a
term of leadership (`begin_term` .. `end_term`), so the routes and services that hold it never see
it replaced.

A term's parts are composed here, each with its dependencies in its constructor and sharing only
the term's QueueState and the process's Counters: `admission.py` (a submit), `dispatch.py` (what
starts now), `reconcile.py` (what the Ray dispatcher reports, as transitions), `outcomes.py` (what
an attempt's failure or a job's end means for the queue) and `operations.py` (operators' cancel,
retry, priority, graph). Rules live there once; the API only validates and delegates. Every
decision touches only the jobs involved: the ready queues are heaps, the dependency index a map,
both rebuilt when a term begins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from ...access import Quotas
from ...bodies import JobFilter, JobUpdate
from ...config import Config
from ...lifecycle import ACTIVE, JobStatus
from ...schemas import JobKind, JobSpec
from ...views import BulkResult, GraphView, JobView
from ..storage import accounts
from ..storage import store as st
from ..storage.logs import LogStore
from ..storage.results import ResultStore
from ..storage.sealing import Sealer
from . import pending
from .admission import Admission
from .arrays import Arrays, load_runs
from .capacity import PREFETCH, Capacity
from .dispatch import Dispatch
from .operations import Operations
from .outcomes import Outcomes
from .ports import Backend
from .queue_items import Clock, Queued
from .queue_state import Counters, QueueState
from .reconcile import Reconcile
from .run_as import RunAs

S = JobStatus


@dataclass
class Term:
    """One term of leadership: its queue and the parts that work on it."""

    state: QueueState
    outcomes: Outcomes
    arrays: Arrays
    admission: Admission
    dispatch: Dispatch
    reconcile: Reconcile
    operations: Operations


class Scheduler:
    def __init__(self, cfg: Config, store: st.Store, backend: Backend, logs: LogStore,
                 clock: Clock | None = None, *, run_as: RunAs | None = None, sealer: Sealer | None = None,
                 results: ResultStore | None = None) -> None:
        """`run_as` and `sealer` default to the ones `cfg` describes; a test passes its own.
        `results`: where large results go (None: every result in its row)."""
        self.cfg = cfg
        self.results = results
        self.store = store
        self.backend = backend
        self.logs = logs
        self.clock = clock or Clock()
        self.sealer = sealer or Sealer(cfg.security.secret_key_file)
        self.run_as = run_as or RunAs(cfg.security.switch_users, cfg.security.sandbox)
        self.counters = Counters()
        #: called when the dispatcher stays unreachable (the head died or restarted)
        self.on_ray_lost: Callable[[], Awaitable[None]] | None = None
        self._hide: dict[JobKind, list[str]] = {}  # per kind: what the daemon's own jobs must not see
        self._tasks: list[asyncio.Task[None]] = []
        self.term = self._new_term()

    def _new_term(self) -> Term:
        """The parts of a term, over an empty queue: a daemon that does not lead holds none."""
        backend = self.backend
        pools = [(p.name, p.resources) for p in self.cfg.nodes.pools]
        state = QueueState(self.clock, Capacity(backend, self.cfg.jobmanager.prefetch, pools,
                                                   self.cfg.jobmanager.executors))
        common: dict[str, Any] = {"cfg": self.cfg, "store": self.store, "clock": self.clock, "state": state,
                                  "counters": self.counters}
        outcomes = Outcomes(**common, backend=backend, logs=self.logs)
        arrays = Arrays(**common, outcomes=outcomes)
        return Term(state, outcomes, arrays,
                    Admission(**common, backend=backend, outcomes=outcomes, sealer=self.sealer),
                    Dispatch(**common, backend=backend, run_as=self.run_as, sealer=self.sealer, hide=self._hide,
                             arrays=arrays, logs=self.logs),
                    Reconcile(**common, backend=backend, logs=self.logs, outcomes=outcomes, lost=self._ray_lost,
                              results=self.results),
                    Operations(**common, outcomes=outcomes))

    def _ray_lost(self) -> None:
        if self.on_ray_lost is not None:
            asyncio.get_running_loop().create_task(self.on_ray_lost())

    @property
    def state(self) -> QueueState:
        """The current term's queue (empty between terms)."""
        return self.term.state

    # -- a term of leadership ---------------------------------------------------------------
    async def begin_term(self) -> None:
        """This daemon leads: the queue as the database holds it (before Ray is connected)."""
        self.term = self._new_term()
        await self.load()

    async def end_term(self) -> None:
        """Another daemon leads: stop dispatching and forget the queue (its writes are fenced)."""
        await self.stop()
        self.term = self._new_term()

    async def load(self) -> None:
        """Read the active jobs from the database (before Ray is connected)."""
        term = self.term

        def q(conn: Connection) -> tuple[list[Any], int, str | None, list[Any]]:
            return (st.active_jobs(conn, [s.value for s in ACTIVE]), st.max_seq(conn),
                    st.get_meta(conn, Reconcile.CURSOR_KEY), accounts.tenants(conn))

        rows, term.state.seq, cursor, tenants = await self.store.read(q)
        self.set_quotas({t.name: accounts.quotas_of(t) for t in tenants})
        term.reconcile.load_cursor(cursor)
        for r in rows:
            spec = JobSpec.model_validate_json(r.spec)
            status = S.PENDING if spec.array is not None else S(r.status)  # an array itself never runs
            term.state.queued[r.id] = Queued.of(r.id, r.seq, spec, status, r.attempts_made, r.retry_base or 0,
                                                r.priority, not_before=r.not_before, held=bool(r.held))
        term.state.active = len(rows)
        term.state.arrays = await load_runs(self.store, [j for j in term.state.queued.values()
                                                         if j.array is not None])

    async def recover(self) -> None:
        """Once Ray is connected: reattach to in-flight work, fail what was lost, admit the rest,
        rebuild the dependency index and the queues."""
        term = self.term
        state = term.state
        await term.reconcile.reattach()
        lost = [j for j in list(state.queued.values()) if j.status is S.RUNNING]
        if lost:
            await term.outcomes.attempts_failed([(j, j.attempts_made) for j in lost],
                                                "lost: the Ray dispatcher no longer knows this job", self.clock.now())
        await term.admission.admit_recovered([j for j in state.queued.values() if j.status is S.SUBMITTED])
        await term.outcomes.enqueue([j for j in state.queued.values() if j.status is S.PENDING])
        state.ready = True
        state.wake.set()

    async def run(self) -> None:
        self._tasks = [asyncio.create_task(self.term.dispatch.loop()),
                       asyncio.create_task(self.term.reconcile.poll_loop())]

    async def stop(self) -> None:
        self.state.stopping = True
        self.state.wake.set()
        await self.term.reconcile.drain()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def wake_up(self) -> None:
        """Something outside the queue changed (a node joined or left): look at the queue again."""
        self.state.wake.set()

    # -- what the API asks ------------------------------------------------------------------
    async def submit(self, specs: list[JobSpec], views: bool = True, batch: bool = False, key: str | None = None,
                     local: bool = False) -> tuple[list[Any], bool]:
        return await self.term.admission.submit(specs, views, batch, key, local)

    async def cancel(self, ids: list[str], flt: JobFilter | None = None, reason: str = "cancelled by user",
                     dry_run: bool = False) -> BulkResult:
        return await self.term.operations.cancel(ids, flt, reason, dry_run)

    async def retry(self, ids: list[str], flt: JobFilter | None = None, dry_run: bool = False,
                    with_dependents: bool = False, failed: bool = False) -> BulkResult:
        return await self.term.operations.retry(ids, flt, dry_run, with_dependents, failed)

    async def hold(self, ids: list[str], flt: JobFilter | None = None, dry_run: bool = False) -> BulkResult:
        return await self.term.operations.hold(ids, flt, dry_run)

    async def release(self, ids: list[str], flt: JobFilter | None = None, dry_run: bool = False) -> BulkResult:
        return await self.term.operations.release(ids, flt, dry_run)

    async def set_priority(self, job_id: str, priority: int) -> JobView:
        return await self.term.operations.set_priority(job_id, priority)

    async def update(self, job_id: str, upd: JobUpdate) -> JobView:
        return await self.term.operations.update(job_id, upd)

    async def graph(self, job_id: str) -> GraphView:
        return await self.term.operations.graph(job_id)

    async def wait(self, job_id: str, timeout: float) -> JobView:
        return await self.term.outcomes.wait(job_id, timeout)

    def explain(self, views: Sequence[JobView]) -> None:
        """Fill in why each PENDING view waits, its place in line and estimated start, from this
        leader's queue (a standby's is empty: it leaves them as they are)."""
        ids = [v.id for v in views if v.status is JobStatus.PENDING]
        if not ids:
            return
        now = self.clock.now()
        found = pending.explain(self.state, ids, self.term.dispatch.cluster(now), now, self.cfg.jobmanager.job_timeout)
        for v in views:
            if v.id in found:
                v.pending = found[v.id]

    def demand(self, limit: int = 1000) -> list[dict[str, float]]:
        """What the jobs ready to start (in line, at most `limit`) ask that no open node has free
        now: what an elastic pool would add a node for. Held, waiting or quota-bound jobs ask
        nothing of a pool. So do the jobs handed to Ray for a node that is gone since (its death
        was not yet known when they were placed): they wait in Ray's queue for room elsewhere."""
        now, state = self.clock.now(), self.state
        cluster = self.term.dispatch.cluster(now)
        out = []
        for job in pending.ready_order(state)[:limit]:
            if state.over_quota(job) is not None:
                continue
            if cluster.fitting(job.need) is None:
                out.append(job.need)
        alive = {node for node, _ in state.capacity.nodes.node_totals(open_only=True)}
        out += [d.need for d in state.dispatched.values()
                if not d.started and d.node != PREFETCH and d.node not in alive][:max(0, limit - len(out))]
        return out

    def set_quotas(self, quotas: dict[str, Quotas]) -> None:
        self.state.quotas = quotas
        self.state.wake.set()

    def usage(self, tenant: str) -> dict[str, Any]:
        return self.state.usage(tenant)

    def queue_depth(self, tenant: str | None = None) -> int:
        return self.state.queue_depth(tenant)

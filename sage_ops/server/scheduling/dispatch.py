"""Dispatch: what the cluster can start now, handed to the backend in one batch per pass. Within
a tenant, highest priority first and FIFO within a priority; across tenants, the least served
first; a tenant at its quota waits without holding up the others; the job chosen next reserves
its resources, and only jobs that cannot delay it start around it (backfill). Event driven (a
submit, a job end, a due retry wakes it), never a fixed sleep."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from ...errors import SageOpsError
from ...lifecycle import JobStatus, amend
from ...schemas import JobKind, JobSpec
from ..backend import transit
from ..backend.protocol import AttemptItem, AttemptOptions, AttemptResources
from ..storage import store as st
from ..storage.logs import LogStore
from ..storage.sealing import Sealer
from .arrays import Arrays
from .capacity import PREFETCH
from .forecast import Cluster, Reservation, fits, take
from .ports import Backend
from .queue_items import Dispatched, Queued
from .queue_state import TermPart
from .quotas import MIN_CPU, fair_shares
from .run_as import RunAs

log = logging.getLogger(__name__)
S = JobStatus


@dataclass(eq=False)
class Dispatch(TermPart):
    backend: Backend
    run_as: RunAs
    sealer: Sealer
    hide: dict[JobKind, list[str]]  # per kind, what the daemon's own jobs must not see (the scheduler's cache)
    arrays: Arrays
    logs: LogStore | None = None  # told of each first attempt: its log starts empty everywhere

    async def loop(self) -> None:
        state = self.state
        while not state.stopping:
            timeout = max(0.0, state.later[0][0] - self.clock.now()) if state.later else None
            try:
                await asyncio.wait_for(state.wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            state.wake.clear()
            await self.once()

    async def once(self) -> list[AttemptItem]:
        """One pass: release the retries now due, hand what can start to the backend (the batch)."""
        state = self.state
        if not state.ready or not self.backend.connected:
            return []
        self._due()
        if state.arrays_due:
            await self.arrays.top_up()  # an array's next tasks, written before any can start
        t0 = time.perf_counter()
        batch = self._take_runnable()
        self.counters.decision_seconds += time.perf_counter() - t0
        self.counters.decisions += len(batch)
        if not batch:
            return batch
        try:
            await self.backend.submit(batch)
            return batch
        except Exception as exc:  # noqa: BLE001 - Ray trouble: put the jobs back, try later
            log.error("dispatch of %d jobs failed: %s", len(batch), exc)
            for item in batch:
                d = state.dispatched.pop(item["id"])
                state.capacity.release(d.node, d.need)
                state.queued[d.id] = d.job
                state.queue(d.job)
            await asyncio.sleep(1)
            state.wake.set()
            return []

    def _due(self) -> None:
        state, now = self.state, self.clock.now()
        while state.later and state.later[0][0] <= now:
            _, seq, job_id = heapq.heappop(state.later)
            job = state.queued.get(job_id)
            if job is not None and job.status is S.PENDING and job.not_before is not None and job.not_before <= now:
                job.not_before = None
                state.queue(job)  # ready now (an array: its tasks may be made)

    def _take_runnable(self) -> list[AttemptItem]:
        """The jobs to start now, in order (see the module's docstring). A big job is never starved
        by small ones: the first that cannot start reserves the earliest node and time it could,
        and a job behind it starts now only if it cannot delay that (EASY backfill, `backfill`)."""
        state, jm = self.state, self.cfg.jobmanager
        batch: list[AttemptItem] = []
        at_quota: set[str | None] = set()
        state.reservation = None
        aside: list[tuple[str | None, tuple[int, int, str]]] = []  # passed over behind the reservation
        try:
            while (tenant := state.ready_queue.order(state.dispatched, state.quotas, at_quota)) is not False:
                heap = state.ready_queue.heaps[tenant]
                prio, _, job_id = heap[0]
                job = state.queued.get(job_id)
                if (job is None or job.status is not S.PENDING or -prio != job.priority or job.not_before
                        or job.held or state.waiting.is_waiting(job_id)):
                    heapq.heappop(heap)  # stale: gone, re-prioritised, delayed, held or waiting
                    continue
                if (why := state.over_quota(job)) is not None:
                    at_quota.add(tenant)
                    self._blocked(job, why[1])
                    continue
                if state.reservation is None:
                    node = state.capacity.charge(job.need)
                    if node is None:
                        if not jm.backfill:
                            break
                        now = self.clock.now()
                        cluster = self.cluster(now)
                        state.reservation = Reservation.of(job_id, job.need, cluster, now)
                        self._preempt_for(job, cluster, now)
                        if cluster.fitting({"CPU": MIN_CPU}) is None:
                            break  # every job asks for MIN_CPU at least: on a full cluster none can backfill
                else:
                    if len(aside) >= jm.backfill_depth:
                        break
                    node = self._backfill(job, state.reservation)
                if node is None:
                    aside.append((tenant, heapq.heappop(heap)))
                    continue
                heapq.heappop(heap)
                del state.queued[job_id]
                attempt = job.attempts_made + 1
                if attempt == 1 and self.logs is not None:
                    self.logs.fresh(job_id)  # no attempt ran anywhere: nothing to fetch from the store
                d = state.dispatched[job_id] = Dispatched(job, attempt, node)
                spec = d.spec
                item: AttemptItem = {"id": job_id, "attempt": attempt,
                                     "resources": cast(AttemptResources, spec.resources.model_dump()),
                                     "spec": spec.model_dump(mode="json"), "opts": self._options(job_id, spec, attempt)}
                if self._on_executor(spec, job.need):
                    item["node"] = "" if node == PREFETCH else node
                batch.append(item)
        finally:
            for tenant, entry in aside:
                heapq.heappush(state.ready_queue.heaps[tenant], entry)
        return batch

    def _preempt_for(self, job: Queued, cluster: Cluster, now: float) -> None:
        """The job next in line cannot start: if stopping preemptible jobs of lower priority (or,
        for a tenant below its fair share, of a tenant above its own) on one node would let it,
        stop the fewest (lowest priority, then the newest: the least work lost), at most
        `preempt_per_minute` a minute. They are warned, then requeued."""
        state, limit = self.state, self.cfg.jobmanager.preempt_per_minute
        recent = state.preemptions
        while recent and recent[0] < now - 60:
            recent.popleft()
        running = list(state.dispatched.values())
        if limit == 0 or len(recent) >= limit or any(d.preempting == job.id for d in running):
            return
        outranks = self._outranks(job, cluster)
        best: list[Dispatched] | None = None
        for node, free in cluster.free.items():
            victims = sorted((d for d in running if d.node == node and d.spec.preemptible and not d.cancelling
                              and not d.preempting and outranks(d)),
                             key=lambda d: (d.job.priority, -d.started_at))
            room, chosen = dict(free), []
            for d in victims:
                if fits(job.need, room):
                    break
                take(room, d.need, -1.0)
                chosen.append(d)
            if chosen and fits(job.need, room) and (best is None or len(chosen) < len(best)):
                best = chosen
        if best is None or len(recent) + len(best) > limit:
            return
        for d in best:
            d.preempting = job.id
            recent.append(now)
            state.in_background(self._preempt(d, job.id, now))

    def _outranks(self, job: Queued, cluster: Cluster) -> Callable[[Dispatched], bool]:
        """Whom `job` may preempt: a job of lower priority; or, when its tenant would still be
        within its fair share with it running, one of a tenant above its own share."""
        state = self.state
        used = state.dispatched.use
        total = sum(t.get("CPU", 0.0) for t in cluster.totals().values())
        shares = fair_shares(total, state.dispatched, state.queued, state.quotas)
        need = max(job.need.get("CPU", 0.0), MIN_CPU)
        mine = job.tenant
        below = mine in shares and used[mine].cpu + need <= shares[mine] + 1e-9

        def outranks(d: Dispatched) -> bool:
            if d.job.priority < job.priority:
                return True
            other = d.tenant
            return (below and other != mine and d.job.priority <= job.priority and other in shares
                    and used[other].cpu > shares[other] + 1e-9)

        return outranks

    async def _preempt(self, d: Dispatched, for_job: str, now: float) -> None:
        """Audit it in the victim's history, then ask its runner to warn and stop it."""
        jm, warning = self.cfg.jobmanager, d.spec.warning()
        how = f"SIG{warning[0]}, {warning[1]:g}s to finish" if warning else "SIGTERM"
        await self.store.write(lambda c: st.apply_transitions(
            c, [amend(d.id, S.RUNNING, f"preempting for {for_job}: {how}")], now))
        try:
            await self.backend.cancel(d.id, (warning[1] if warning else 0) + jm.kill_grace, preempt=True)
        except Exception as exc:  # noqa: BLE001 - Ray trouble: it runs on; the next pass may ask again
            d.preempting = None
            log.warning("could not preempt job %s: %s", d.id, str(exc).splitlines()[0][:300])

    def _backfill(self, job: Queued, reservation: Reservation) -> str | None:
        """The node a job behind the reservation may start on now, or None. A job without its own
        --timeout never backfills: the daemon's default limit is a guess, not the user's word."""
        if job.timeout is None:
            return None
        ends = self.clock.now() + job.timeout
        return self.state.capacity.charge(job.need, admits=lambda node: reservation.admits(node, job.need, ends))

    def _on_executor(self, spec: JobSpec, need: dict[str, float]) -> bool:
        """A plain command or script (no pip list, image or pipeline: those need Ray's own task
        environment) runs on its node's executor while recent jobs ran short (Capacity.executor_ok)."""
        return (spec.kind in (JobKind.COMMAND, JobKind.SCRIPT)
                and not spec.pip and not spec.image and self.state.capacity.executor_ok(need))

    def cluster(self, now: float) -> Cluster:
        """The open nodes' free resources and when each running job's time limit frees more."""
        state, default = self.state, self.cfg.jobmanager.job_timeout
        running = ((d.node, (d.started_at if d.started and d.started_at else now) + (d.spec.timeout or default),
                    d.need) for d in state.dispatched.values())
        return Cluster.now(state.capacity.nodes.node_totals(open_only=True), state.capacity.used, running)

    def _options(self, job_id: str, spec: JobSpec, attempt: int) -> AttemptOptions:
        """How the attempt runs: limits, the user it runs as (or what it must not see), its secrets
        sealed for this attempt alone."""
        jm, storage = self.cfg.jobmanager, self.cfg.storage
        opts: AttemptOptions = {"timeout": spec.timeout or jm.job_timeout, "kill_grace": jm.kill_grace,
                                "max_log_bytes": storage.max_log_bytes, "max_result_bytes": storage.max_result_bytes,
                                "run_as": spec.run_as}
        if warning := spec.warning():
            opts["warn_signal"], opts["warn_seconds"] = warning
        if not spec.run_as:
            kind = spec.kind
            if kind not in self.hide:
                self.hide[kind] = self.run_as.hidden(self.cfg, kind)
            opts["hide"] = self.hide[kind]
        if spec.secret_env:
            try:
                opts["secret_env"] = transit.seal(self.sealer.unseal(spec), job_id, attempt)
            except (SageOpsError, transit.TransitError) as exc:
                opts["secret_error"] = exc.message  # the attempt fails, saying why
        return opts

    def _blocked(self, job: Queued, why: str) -> None:
        """Show why a job waits (once per reason): its reason says which quota holds it."""
        if job.blocked == why:
            return
        job.blocked = why
        now = self.clock.now()
        self.state.in_background(self.store.write(lambda c: st.apply_transitions(c, [amend(job.id, S.PENDING, why)],
                                                                                 now)))

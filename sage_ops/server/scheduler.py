"""Admission, the priority queue, dispatch of what the cluster can start now, the events that
come back from Ray, cancellation, and start-up recovery.

Rules live here once; the API only validates and delegates. Dispatch is event driven (a
submit, a job end, a node change wakes it), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from ..config import Config
from ..errors import Conflict, NotFound
from ..lifecycle import ACTIVE, JobStatus, Transition, attempt_outcome, is_terminal, transition
from ..schemas import JobSpec, JobView
from . import store as st
from .capacity import Capacity
from .dispatcher import RayBackend
from .logs import LogStore

log = logging.getLogger(__name__)
S = JobStatus
CURSOR_KEY = "dispatcher_cursor"


def new_job_id() -> str:
    return secrets.token_hex(6)


@dataclass
class Queued:
    id: str
    seq: int
    spec: JobSpec
    status: JobStatus
    attempts_made: int = 0

    @property
    def need(self) -> dict[str, float]:
        return self.spec.resources.as_ray()


@dataclass
class _Ref:
    id: str
    name: str
    status: JobStatus
    reason: str | None


@dataclass
class Dispatched:
    id: str
    attempt: int
    need: dict[str, float]
    node: str
    spec: JobSpec
    started: bool = False
    started_at: float = 0.0
    cancelling: bool = False


@dataclass
class Clock:
    """Injectable time source (tests and retries in later work)."""

    now: Callable[[], float] = field(default=time.time)


class Scheduler:
    def __init__(self, cfg: Config, store: st.Store, backend: RayBackend, logs: LogStore,
                 clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.backend = backend
        self.logs = logs
        self.clock = clock or Clock()
        self.queued: dict[str, Queued] = {}
        self.heap: list[tuple[int, int, str]] = []
        self.dispatched: dict[str, Dispatched] = {}
        self.capacity = Capacity(backend, cfg.jobmanager.prefetch)
        self.active = 0
        self.seq = 0
        self.ready = False
        self.epoch = ""
        self.cursor = 0  # last event committed (the actor may forget up to here)
        self.received = 0  # last event taken from the actor
        self._applying: set[asyncio.Future[None]] = set()
        self.wake = asyncio.Event()
        self._done_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- start-up ----------------------------------------------------------------------------
    async def load(self) -> None:
        """Read the active jobs from the database (before Ray is connected)."""
        def q(conn: Connection) -> tuple[list[Any], int, str | None]:
            statuses = [s.value for s in ACTIVE]
            return st.active_jobs(conn, statuses), st.max_seq(conn), st.get_meta(conn, CURSOR_KEY)

        rows, self.seq, cursor = await self.store.read(q)
        if cursor:
            saved = json.loads(cursor)
            self.epoch, self.cursor = saved["epoch"], saved["seq"]
            self.received = self.cursor
        for r in rows:
            job = Queued(r.id, r.seq, JobSpec.model_validate_json(r.spec), S(r.status), r.attempts_made)
            self.queued[r.id] = job
        self.active = len(rows)

    async def recover(self) -> None:
        """Once Ray is connected: reattach to in-flight work, fail what was lost, admit the rest."""
        first = True
        while True:
            reply = await self.backend.poll(self.epoch, self.cursor, self.cursor, 0)
            if reply["epoch"] != self.epoch:
                if self.epoch:
                    log.warning("the Ray dispatcher was restarted; jobs it ran are lost")
                self.epoch, self.cursor = reply["epoch"], 0
            if first:
                self._reattach(reply["inflight"], reply["events"])
                first = False
            await self.apply_events(reply["events"])
            self.received = self.cursor
            if len(reply["events"]) < 20_000:
                break
        lost = [j for j in list(self.queued.values()) if j.status is S.RUNNING]
        if lost:
            await self._finish_lost(lost)
        await self._admit([j for j in self.queued.values() if j.status is S.SUBMITTED])
        for job in self.queued.values():
            if job.status is S.PENDING:
                self._push(job)
        self.ready = True
        self.wake.set()

    def _reattach(self, inflight: dict[str, int], events: list[Any]) -> None:
        ended = {p["job_id"] for _s, kind, p in events if kind == "ended"}
        for job_id, attempt in inflight.items():
            job = self.queued.pop(job_id, None)
            if job is None:
                continue
            node = self.capacity.charge(job.need) or "?"
            self.dispatched[job_id] = Dispatched(job_id, attempt, job.need, node, job.spec,
                                                 started=job.status is S.RUNNING)
        for job_id in ended:  # ends that arrive with this batch: treat as dispatched
            job = self.queued.pop(job_id, None)
            if job is not None:
                self.dispatched[job_id] = Dispatched(job_id, job.attempts_made or 1, job.need, "?", job.spec,
                                                     started=job.status is S.RUNNING)

    async def _finish_lost(self, jobs: list[Queued]) -> None:
        now = self.clock.now()
        trs = [transition(j.id, S.RUNNING, S.FAILED, "lost: the Ray dispatcher no longer knows this job",
                          j.attempts_made, ended_at=now) for j in jobs]
        await self.store.write(lambda c: st.apply_transitions(c, trs, now))
        for j in jobs:
            self.queued.pop(j.id, None)
            self._ended(j.id)

    # -- submission --------------------------------------------------------------------------
    def _admission(self, spec: JobSpec, active: int, nodes: list[tuple[str, dict[str, float]]]) -> str | None:
        """None if the job may queue, else the reason it is rejected."""
        if active >= self.cfg.jobmanager.max_jobs:
            return f"queue full: {active} active jobs (max_jobs={self.cfg.jobmanager.max_jobs})"
        if spec.dependencies:
            return "dependencies are not supported yet"
        return self.capacity.never_fits(spec.resources.as_ray(), nodes)

    async def submit(self, specs: list[JobSpec], views: bool = True) -> list[Any]:
        """Admit and durably record jobs; returns their views (or, with views=False, rows)."""
        now = self.clock.now()
        rows: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        admitted: list[Queued] = []
        active = self.active
        nodes = self.backend.node_totals()  # once per request, not per job
        for spec in specs:
            self.seq += 1
            job_id = new_job_id()
            trs = [transition(job_id, None, S.SUBMITTED, "submitted")]
            if self.ready:
                reason = self._admission(spec, active, nodes)
                trs.append(transition(job_id, S.SUBMITTED, S.REJECTED if reason else S.PENDING,
                                      reason or "admitted"))
            final = trs[-1]
            if not is_terminal(final.new):
                active += 1
                admitted.append(Queued(job_id, self.seq, spec, final.new))
            events.extend(st.event_row(t, now) for t in trs)
            rows.append({
                "id": job_id, "seq": self.seq, "name": spec.display_name(), "tenant": spec.tenant,
                "status": final.new.value, "reason": final.reason if final.new is S.REJECTED else None,
                "priority": spec.priority, "kind": spec.kind.value, "spec": spec.model_dump_json(),
                "exit_code": None, "result": None, "attempts_made": 0, "node": None, "created_at": now,
                "updated_at": now, "started_at": None, "ended_at": now if final.new is S.REJECTED else None,
            })
        await self.store.write(lambda c: st.insert_jobs(c, rows, events))  # durable before acknowledged
        self.active += len(admitted)
        for job in admitted:
            self.queued[job.id] = job
            if job.status is S.PENDING:
                self._push(job)
        self.wake.set()
        if not views:
            return [_Ref(r["id"], r["name"], S(r["status"]), r["reason"]) for r in rows]
        single = len(rows) == 1
        return [st.fresh_view(r, spec if single else None) for r, spec in zip(rows, specs)]

    async def _admit(self, jobs: list[Queued]) -> None:
        now = self.clock.now()
        trs: list[Transition] = []
        nodes = self.backend.node_totals()
        for job in jobs:
            reason = self._admission(job.spec, self.active - 1, nodes)
            trs.append(transition(job.id, S.SUBMITTED, S.REJECTED if reason else S.PENDING, reason or "admitted",
                                  **({"ended_at": now} if reason else {})))
        applied = await self.store.write(lambda c: st.apply_transitions(c, trs, now))
        for tr, ok in zip(trs, applied):
            job = self.queued[tr.job_id]
            if not ok:
                continue
            job.status = tr.new
            if tr.new is S.REJECTED:
                self.queued.pop(job.id)
                self._ended(job.id)

    # -- dispatch ----------------------------------------------------------------------------
    def _push(self, job: Queued) -> None:
        heapq.heappush(self.heap, (-job.spec.priority, job.seq, job.id))

    def _release(self, job: Dispatched) -> None:
        self.capacity.release(job.node, job.need)

    async def dispatch_loop(self) -> None:
        while not self._stopping:
            await self.wake.wait()
            self.wake.clear()
            if not self.ready or not self.backend.connected:
                continue
            batch = self._take_runnable()
            if not batch:
                continue
            try:
                await self.backend.submit(batch)
            except Exception as exc:  # noqa: BLE001 - Ray trouble: put the jobs back, try later
                log.error("dispatch of %d jobs failed: %s", len(batch), exc)
                for item in batch:
                    d = self.dispatched.pop(item["id"])
                    self._release(d)
                    job = Queued(d.id, 0, d.spec, S.PENDING, d.attempt - 1)
                    self.queued[d.id] = job
                    heapq.heappush(self.heap, (-d.spec.priority, 0, d.id))
                await asyncio.sleep(1)
                self.wake.set()

    def _take_runnable(self) -> list[dict[str, Any]]:
        """Highest priority first, FIFO within a priority. The head of the queue reserves its
        resources: nothing smaller jumps it, so a big job is never starved by small ones."""
        batch = []
        while self.heap:
            _, _, job_id = self.heap[0]
            job = self.queued.get(job_id)
            if job is None or job.status is not S.PENDING:
                heapq.heappop(self.heap)
                continue
            node = self.capacity.charge(job.need)
            if node is None:
                break
            heapq.heappop(self.heap)
            del self.queued[job_id]
            attempt = job.attempts_made + 1
            self.dispatched[job_id] = Dispatched(job_id, attempt, job.need, node, job.spec)
            timeout = job.spec.timeout or self.cfg.jobmanager.job_timeout
            batch.append({"id": job_id, "attempt": attempt, "resources": job.spec.resources.model_dump(),
                          "spec": job.spec.model_dump(mode="json"),
                          "opts": {"timeout": timeout, "kill_grace": self.cfg.jobmanager.kill_grace}})
        return batch

    # -- events from Ray ---------------------------------------------------------------------
    async def poll_loop(self) -> None:
        last_refresh = 0.0
        while not self._stopping:
            try:
                reply = await self.backend.poll(self.epoch, self.cursor, self.received, 1.0)
                if reply["epoch"] != self.epoch:
                    log.warning("the Ray dispatcher changed; failing the jobs it had")
                    await self._drain()
                    self.epoch, self.cursor, self.received = reply["epoch"], 0, 0
                    lost = [d for d in self.dispatched.values() if d.id not in reply["inflight"]]
                    await self._fail_dispatched(lost, "lost: the Ray dispatcher was restarted")
                # Commits are pipelined: keep polling while this batch is being written.
                await self.apply_events(reply["events"], wait=False)
                if time.monotonic() - last_refresh > 2:
                    last_refresh = time.monotonic()
                    await asyncio.to_thread(self.backend.refresh_nodes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the daemon up through Ray hiccups
                if self._stopping:
                    return
                log.error("polling the Ray dispatcher failed: %s", exc)
                self.backend.detail = f"dispatcher unreachable: {exc.__class__.__name__}"
                await asyncio.sleep(1)

    async def _fail_dispatched(self, jobs: list[Dispatched], reason: str) -> None:
        now = self.clock.now()

        def op(conn: Connection) -> list[str]:
            done = []
            for d in jobs:
                if st.move_to(conn, d.id, S.FAILED, reason, d.attempt, now, ended_at=now):
                    done.append(d.id)
            return done

        done = await self.store.write(op)
        for d in jobs:
            self.dispatched.pop(d.id, None)
            self._release(d)
        for job_id in done:
            self._ended(job_id)
        self.wake.set()

    async def _drain(self) -> None:
        if self._applying:
            await asyncio.gather(*self._applying, return_exceptions=True)

    async def apply_events(self, events: list[Any], wait: bool = True) -> None:
        """Apply a batch of the actor's events: memory at once, the database in order.

        The writer commits operations in the order they were queued, so batches stay ordered
        even when the caller does not wait; the cursor (what the actor may forget) moves only
        after the commit that holds the batch.
        """
        if not events:
            return
        trs: list[tuple[Transition, Transition | None, dict[str, Any] | None]] = []
        attempt_updates: list[tuple[str, int, dict[str, Any]]] = []
        ended: list[str] = []
        for _seq, kind, p in events:
            job_id, attempt = p["job_id"], p["attempt"]
            d = self.dispatched.get(job_id)
            if kind == "logs":
                self.logs.append(job_id, [tuple(x) for x in p["lines"]])
            elif kind == "started":
                if d is not None and d.attempt == attempt:
                    d.started = True
                    d.started_at = p["t"]
                row = {"job_id": job_id, "number": attempt, "status": S.RUNNING.value, "node": p["node"],
                       "pid": p["pid"], "started_at": p["t"]}
                trs.append((transition(job_id, S.PENDING, S.RUNNING, f"attempt {attempt} on {p['node']}", attempt,
                                       started_at=p["t"], node=p["node"], attempts_made=attempt), None, row))
            elif kind == "ended":
                status, reason = attempt_outcome(p.get("exit_code"), bool(p.get("cancelled")), p.get("reason"))
                fields = {"ended_at": p["t"], "exit_code": p.get("exit_code"),
                          "result": json.dumps(p["result"]) if p.get("result") is not None else None}
                main = transition(job_id, S.RUNNING, status, reason, attempt, **fields)
                # if its `started` never arrived (it could not start), it still ran as an attempt
                alt = transition(job_id, S.PENDING, S.RUNNING, f"attempt {attempt}", attempt, started_at=p["t"],
                                 attempts_made=attempt)
                trs.append((main, alt, {"job_id": job_id, "number": attempt, "status": S.RUNNING.value,
                                        "started_at": p["t"]}))
                attempt_updates.append((job_id, attempt, {"status": status.value, "exit_code": p.get("exit_code"),
                                                          "reason": reason, "ended_at": p["t"]}))
                if d is not None and d.attempt == attempt:
                    self.dispatched.pop(job_id)
                    self._release(d)
                    if d.started_at:
                        self.capacity.observe_runtime(p["t"] - d.started_at)
                ended.append(job_id)
        cursor = json.dumps({"epoch": self.epoch, "seq": events[-1][0]})

        def op(conn: Connection) -> list[str]:
            finished = []
            for main, alt, row in trs:
                ok = st.apply_transitions(conn, [main])[0]
                if ok and alt is None and row is not None:
                    st.insert_attempt(conn, row)  # a `started` event
                if not ok and alt is not None and st.apply_transitions(conn, [alt])[0]:
                    assert row is not None
                    st.insert_attempt(conn, row)  # ended without a `started`: still an attempt
                    ok = st.apply_transitions(conn, [main])[0]
                if ok and is_terminal(main.new):
                    finished.append(main.job_id)
            for job_id, number, values in attempt_updates:
                st.update_attempt(conn, job_id, number, values)
            st.set_meta(conn, CURSOR_KEY, cursor)
            return finished

        last = events[-1][0]
        self.received = max(self.received, last)
        if ended:
            self.wake.set()  # their resources are free now; the commit can follow
        write = asyncio.ensure_future(self.store.write(op))

        async def committed() -> None:
            try:
                finished = await write
            except Exception as exc:  # noqa: BLE001 - fetch the batch again from the actor
                log.error("recording %d dispatcher events failed: %s", len(events), exc)
                self.received = self.cursor
                return
            self.cursor = max(self.cursor, last)
            for job_id in finished:
                self._ended(job_id)
            for job_id in ended:
                self.logs.wake(job_id)

        task = asyncio.ensure_future(committed())
        self._applying.add(task)
        task.add_done_callback(self._applying.discard)
        if wait:
            await task

    def _ended(self, job_id: str) -> None:
        """A job reached a terminal state (counted once, by whoever moved it there)."""
        self.active -= 1
        for fut in self._done_waiters.pop(job_id, []):
            if not fut.done():
                fut.set_result(None)
        self.logs.wake(job_id)

    # -- cancellation ------------------------------------------------------------------------
    async def cancel(self, ids: list[str], reason: str = "cancelled by user") -> list[JobView | Exception]:
        now = self.clock.now()

        def op(conn: Connection) -> list[str | Exception]:
            out: list[str | Exception] = []
            for job_id in ids:
                try:
                    st.move_to(conn, job_id, S.CANCELLED, reason, 0, now, ended_at=now, strict=True)
                    out.append(job_id)
                except (NotFound, Conflict) as exc:
                    out.append(exc)
            return out

        outcome = await self.store.write(op)
        kills = []
        for res in outcome:
            if isinstance(res, Exception):
                continue
            self.queued.pop(res, None)
            d = self.dispatched.get(res)
            if d is not None:
                d.cancelling = True
                kills.append(self.backend.cancel(res, self.cfg.jobmanager.kill_grace))
            self._ended(res)
        if kills:
            await asyncio.gather(*kills, return_exceptions=True)
        self.wake.set()
        views = await self.store.read(lambda c: [st.get_job(c, r) if isinstance(r, str) else r for r in outcome])
        return views

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

    def queue_depth(self) -> int:
        return sum(1 for j in self.queued.values() if j.status is S.PENDING)

    async def run(self) -> None:
        self._tasks = [asyncio.create_task(self.dispatch_loop()), asyncio.create_task(self.poll_loop())]

    async def stop(self) -> None:
        self._stopping = True
        self.wake.set()
        await self._drain()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

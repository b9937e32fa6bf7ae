"""The events the Ray dispatcher actor reports (started / logs / ended), turned into guarded
transitions and committed in order, with the cursor that lets the actor forget them.

This part speaks the actor's protocol; what a job's end means for the queue is outcomes.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy import Connection

from ...arrays import array_of
from ...lifecycle import JobStatus, Transition, is_terminal
from ..backend.protocol import Event, PollReply
from ..storage import accounts
from ..storage import store as st
from ..storage.logs import LogStore
from ..storage.results import ResultStore
from .decode import Decoded, decode
from .outcomes import Outcomes
from .ports import Backend
from .queue_items import Dispatched
from .queue_state import TermPart

log = logging.getLogger(__name__)
S = JobStatus


LOST_AFTER = 5  # failed polls in a row (about 5-10 s) before the Ray connection is rebuilt
LOST_AFTER_REFUSED = 2  # ... when the head's address refuses connections (it is gone)
REFUSED_AUDIT_SECONDS = 60.0  # calls the dispatcher refused reach the audit as one row per this much time


def _logged(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("cannot write an audit row: %s", done.exception())


@dataclass(eq=False)
class Reconcile(TermPart):
    CURSOR_KEY: ClassVar[str] = "dispatcher_cursor"
    retry_pause: ClassVar[float] = 1.0  # seconds between failed polls
    backend: Backend
    logs: LogStore
    outcomes: Outcomes
    lost: Callable[[], None]  # the dispatcher stays unreachable (the head died or restarted)
    results: ResultStore | None = None  # where results over storage.inline_result_bytes go

    def __post_init__(self) -> None:
        self.epoch = ""
        self.cursor = 0  # last event committed (the actor may forget up to here)
        self.received = 0  # last event taken from the actor
        self._applying: set[asyncio.Future[None]] = set()
        self._refused_audited = (0, -REFUSED_AUDIT_SECONDS)  # (count in the audit, when)

    def load_cursor(self, saved: str | None) -> None:
        if saved:
            data = json.loads(saved)
            self.epoch, self.cursor = data["epoch"], data["seq"]
            self.received = self.cursor

    async def reattach(self) -> None:
        """At start-up: take back the jobs still in flight, and drain what ended meanwhile."""
        first = True
        while True:
            reply = await self.backend.poll(self.epoch, self.cursor, self.cursor, 0)
            if reply["epoch"] != self.epoch:
                if self.epoch:
                    log.warning("the Ray dispatcher was restarted; jobs it ran are lost")
                self.epoch, self.cursor = reply["epoch"], 0
            if first:
                self._take_back(reply["inflight"], reply["events"])
                first = False
            await self.apply_events(reply["events"])
            self.received = self.cursor
            if len(reply["events"]) < 20_000:
                break

    def _take_back(self, inflight: dict[str, int], events: list[Event]) -> None:
        ended = {p["job_id"]: p["attempt"] for _s, kind, p in events if kind == "ended"}
        for job_id, attempt in [*inflight.items(), *ended.items()]:
            job = self.state.queued.pop(job_id, None)
            if job is None:
                continue
            node = self.state.capacity.charge(job.need) if job_id in inflight else None
            self.state.dispatched[job_id] = Dispatched(job, attempt, node or "?", started=job.status is S.RUNNING)

    async def poll_loop(self) -> None:
        last_refresh = 0.0
        failures = 0
        while not self.state.stopping:
            try:
                reply = await self.backend.poll(self.epoch, self.cursor, self.received, 1.0)
                failures = 0
                if reply["epoch"] != self.epoch:
                    log.warning("the Ray dispatcher changed; failing the jobs it had")
                    await self.drain()
                    self.epoch, self.cursor, self.received = reply["epoch"], 0, 0
                    lost = [d for d in self.state.dispatched.values() if d.id not in reply["inflight"]]
                    for d in lost:
                        self.state.dispatched.pop(d.id, None)
                        self.state.capacity.release(d.node, d.need)
                    await self.outcomes.attempts_failed([(d.job, d.attempt) for d in lost],
                                                "lost: the Ray dispatcher was restarted", self.clock.now())
                self.outcomes.recheck_cancels(reply["inflight"])
                self._audit_refused(reply)
                # Commits are pipelined: keep polling while this batch is being written.
                await self.apply_events(reply["events"], wait=False)
                if time.monotonic() - last_refresh > 2:
                    last_refresh = time.monotonic()
                    await asyncio.to_thread(self.backend.refresh_nodes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the daemon up through Ray hiccups
                if self.state.stopping:
                    return
                failures += 1
                log.error("polling the Ray dispatcher failed (%d): %s", failures, str(exc).splitlines()[0][:300])
                self.backend.detail = f"dispatcher unreachable: {exc.__class__.__name__}"
                if failures >= LOST_AFTER or (failures >= LOST_AFTER_REFUSED
                                              and await asyncio.to_thread(self.backend.head_refuses)):
                    self.backend.connected = False  # health says so at once
                    self.lost()
                    return
                await asyncio.sleep(self.retry_pause)

    def _audit_refused(self, reply: PollReply) -> None:
        """Calls the dispatcher refused (no key, a wrong capability: someone else reached the
        actor) reach the audit as "dispatcher.refused" with their count: the first at once,
        then at most one row per REFUSED_AUDIT_SECONDS, so a flood costs no more."""
        count = reply.get("refused") or 0  # `get`: an older actor, still busy, may not count them
        audited, at = self._refused_audited
        if count < audited:  # another actor (its count starts again)
            audited = 0
        self.counters.refused = count
        now = time.monotonic()
        if count == audited or now - at < REFUSED_AUDIT_SECONDS:
            self._refused_audited = (audited, at)
            return
        self._refused_audited = (count, now)
        detail = f"{count - audited} calls to the Ray dispatcher refused (last: {reply.get('refused_last')})"
        row = {"time": time.time(), "actor": "ray", "tenant": None, "action": "dispatcher.refused",
               "target": None, "status": 403, "detail": detail[:500]}
        asyncio.ensure_future(self.store.write(lambda conn: accounts.add_audit(conn, [row]), fenced=False)
                              ).add_done_callback(_logged)

    async def drain(self) -> None:
        if self._applying:
            await asyncio.gather(*self._applying, return_exceptions=True)

    async def apply_events(self, events: list[Event], wait: bool = True) -> None:
        """Apply a batch of the actor's events: memory at once, the database in order.

        The writer commits operations in the order they were queued, so batches stay ordered
        even when the caller does not wait; the cursor (what the actor may forget) moves only
        after the commit that holds the batch.
        """
        if not events:
            return
        decoded = decode(events, self.state.dispatched)
        cancelled = await self._store_logs(decoded)
        if self.results is not None:  # large results to the store first: the rows then only point there
            mains = await self.results.offload([m.main for m in decoded.moves])
            for m, main in zip(decoded.moves, mains):
                m.main = main
        gone = self._remember(decoded)
        arrays = self._arrays_started(decoded)
        last = events[-1][0]
        self.received = max(self.received, last)
        write = asyncio.ensure_future(self.store.write(self._transaction(decoded, last, arrays)))  # queued in order
        task = asyncio.ensure_future(self._committed(write, gone, last, len(events)))
        self._applying.add(task)
        task.add_done_callback(self._applying.discard)
        if cancelled:
            raise asyncio.CancelledError
        if wait:
            await task

    async def _store_logs(self, decoded: Decoded) -> bool:
        """Log blocks first, off the event loop; an attempt's lines come before its `ended`, so
        they are on disk before its end is committed (and before followers hear of it). Returns
        whether the caller was cancelled meanwhile (stopping: lines on disk must be committed too)."""
        max_bytes = self.cfg.storage.max_log_bytes
        cancelled = False
        if decoded.blocks:
            written = asyncio.ensure_future(self.logs.append_blocks(decoded.blocks, max_bytes))
            while not written.done():
                try:
                    await asyncio.shield(written)
                except asyncio.CancelledError:
                    cancelled = True
            written.result()
        for job_id, lines in decoded.old_lines:
            self.logs.append(job_id, lines, max_bytes)
        return cancelled

    def _remember(self, decoded: Decoded) -> dict[str, Dispatched]:
        """The dispatched attempts that started or ended, in memory at once: an ended one frees
        its resources before its end is committed. Returns those that ended."""
        state = self.state
        for job_id, t, where in decoded.started:
            d = state.dispatched[job_id]
            self.counters.started += not d.started
            d.started, d.started_at, d.ran_on = True, t, where
        gone: dict[str, Dispatched] = {}
        for job_id, t in decoded.ended:
            d = gone[job_id] = state.dispatched.pop(job_id)
            state.capacity.release(d.node, d.need)
            if d.started_at:
                state.capacity.observe_runtime(t - d.started_at)
        if gone:
            state.wake.set()  # their resources are free now; the commit can follow
        return gone

    def _arrays_started(self, decoded: Decoded) -> list[tuple[str, str, float]]:
        """(array, task, when) for each array whose first task just started: its row goes RUNNING."""
        out = []
        for job_id, t, _ in decoded.started:
            run = self.state.arrays.get(array_of(job_id) or "")
            if run is not None and not run.started:
                run.started = True
                out.append((run.id, job_id, t))
        return out

    def _transaction(self, decoded: Decoded, last: int,
                     arrays: list[tuple[str, str, float]]) -> Callable[[Connection], list[Transition]]:
        """One transaction for the batch and the cursor; it returns the transitions that moved a
        running attempt."""
        cursor = json.dumps({"epoch": self.epoch, "seq": last})

        def op(conn: Connection) -> list[Transition]:
            for array_id, task, t in arrays:
                st.move_to(conn, array_id, S.RUNNING, f"task {task} started", 0, t, started_at=t)
            moved = []
            for m in decoded.moves:
                ok = st.apply_transitions(conn, [m.main])[0]
                if ok and m.alt is None and m.row is not None:
                    st.insert_attempt(conn, m.row)  # a `started` event
                if not ok and m.alt is not None and st.apply_transitions(conn, [m.alt])[0]:
                    assert m.row is not None
                    st.insert_attempt(conn, m.row)  # ended without a `started`: still an attempt
                    ok = st.apply_transitions(conn, [m.main])[0]
                if ok and m.main.old is S.RUNNING:
                    moved.append(m.main)
            for job_id, number, values in decoded.attempt_updates:
                st.update_attempt(conn, job_id, number, values)
            for row in decoded.stats.values():
                st.put_pipeline_stats(conn, row)
            st.set_meta(conn, self.CURSOR_KEY, cursor)
            return moved

        return op

    async def _committed(self, write: Awaitable[list[Transition]], gone: dict[str, Dispatched], last: int,
                         count: int) -> None:
        """After the commit: the cursor moves, and the ends take effect on the queue."""
        try:
            moved = await write
        except Exception as exc:  # noqa: BLE001 - fetch the batch again from the actor
            log.error("recording %d dispatcher events failed: %s", count, exc)
            self.received = self.cursor
            return
        self.cursor = max(self.cursor, last)
        ended = []
        for tr in moved:
            if is_terminal(tr.new):
                ended.append((tr.job_id, tr.new))
            elif tr.new is S.PENDING and tr.job_id in gone:
                self.outcomes.requeue(gone[tr.job_id].job, tr)
        await self.outcomes.finish(ended)
        for job_id in gone:
            self.logs.wake(job_id)

"""A node's long-lived executors: Ray workers that each run many short jobs, one after another.

A Ray task per job costs a lease, a task and its result, and an actor call per event: about
5 ms of CPU on this kind of machine, five times what a `true` costs. An executor is an actor
pinned to its node that takes queued attempts in batches (`take`) and runs each exactly as a task
would (attempt.py: its process group, user or sandbox, cgroup, limits, timeout), one at a time,
so each attempt still owns the worker process (its cgroup move at fork, its adopted children).
Its events (started, log batches, ended) go back to the dispatcher actor in one `report` call at a
time, holding everything that queued meanwhile. The dispatcher (actor.py) owns the executors:
they die with it, and the daemon decides which jobs run on them (scheduling/dispatch.py).

Nothing here trusts a caller: `take`, `release` and `cancel` need the dispatcher's key for its
executors (an executor keeps its hash), and every reported event carries its attempt's
capability, which the dispatcher checks.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from .attempt import Attempt, _dispatcher
from .log_calls import LogCalls
from .protocol import Report, SubmittedAttempt, key_opens, said

__all__ = ["Executor", "ExecutorAttempt", "Outbox"]

OUTBOX_BYTES = 8 * 1024 * 1024  # log data queued for the dispatcher: past it an attempt's flush waits
LINGER = 0.02  # seconds a report waits for more events while more jobs are queued here (one call for many)


class Outbox:
    """The events of this executor's attempts, in order, sent by one thread in one call at a time."""

    def __init__(self, dispatcher: Any, busy: Callable[[], bool] = lambda: False) -> None:
        """`busy`: whether more jobs wait here, so more events come soon (a report lingers)."""
        self.dispatcher, self.busy = dispatcher, busy
        self.cond = threading.Condition()
        self.items: list[Report] = []
        self.bytes = 0  # log data in `items`

    def put(self, kind: str, payload: dict[str, Any], until: float = float("inf")) -> None:
        """Queue one event; log data waits (until `until`) while OUTBOX_BYTES are queued already."""
        size = len(payload.get("data") or b"")
        with self.cond:
            while size and self.bytes >= OUTBOX_BYTES and time.monotonic() < until:
                self.cond.wait(0.25)
            self.items.append((kind, payload))  # type: ignore[arg-type]
            self.bytes += size
            self.cond.notify_all()

    def run(self) -> None:
        """Forever: everything queued, in one `report` call, waited for before the next (in order)."""
        while True:
            with self.cond:
                while not self.items:
                    self.cond.wait()
                if self.busy():
                    until = time.monotonic() + LINGER
                    while (left := until - time.monotonic()) > 0 and self.bytes < OUTBOX_BYTES:
                        self.cond.wait(left)
                batch, self.items, self.bytes = self.items, [], 0
                self.cond.notify_all()
            try:
                ray.get(self.dispatcher.report.remote(batch))
            except Exception:  # noqa: BLE001 - the dispatcher is gone: so are we, soon (we are its own)
                traceback.print_exc()
                time.sleep(1)


class QueuedLogs(LogCalls):
    """An executor attempt's log batches, queued in the executor's outbox instead of a call each."""

    def __init__(self, outbox: Outbox, job_id: str, attempt: int, cap: bytes) -> None:
        super().__init__(None, job_id, attempt, cap)
        self.outbox = outbox

    def flush(self, until: float = float("inf")) -> None:
        if self.pending:
            self.outbox.put("logs", {"job_id": self.job_id, "attempt": self.attempt, "data": b"".join(self.pending),
                                     "cap": self.cap}, until)
            self.sent += 1
            self.pending.clear()
            self.buffered = 0
        self.last_flush = time.monotonic()


class ExecutorAttempt(Attempt):
    """An attempt run by an executor: its events go to the outbox, and a cancel is a request it
    checks between reads (`stop`), not an interrupt from Ray."""

    def __init__(self, job: SubmittedAttempt, owner: tuple[str, str, str], outbox: Outbox) -> None:
        super().__init__(job["id"], job["attempt"], job["spec"], owner, {**job["opts"], "resources": job["resources"]},
                         job["cap"])
        self.outbox = outbox
        self.log = QueuedLogs(outbox, self.job_id, self.attempt, self.cap)
        self.stop_asked = False
        self.preempt_asked = False

    def stop(self, preempt: bool) -> None:
        self.preempt_asked = self.preempt_asked or preempt
        self.stop_asked = True

    def check_stop(self) -> None:
        if self.stop_asked:
            self.stop_asked = False  # once: a preempted job is warned, then waited for
            raise KeyboardInterrupt

    def preempted(self) -> bool:
        return self.preempt_asked

    def tell_started(self) -> None:
        assert self.started is not None
        self.outbox.put("started", {"job_id": self.job_id, "attempt": self.attempt, "cap": self.cap, **self.started})


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)
class Executor:
    """Runs the attempts it is given, in order, one at a time (`serve`, which never returns: the
    dispatcher learns of this executor's death when that call fails)."""

    def __init__(self, key_digest: bytes, owner: tuple[str, str, str]) -> None:
        self._key_digest = key_digest
        self.owner = owner
        self.queue: deque[SubmittedAttempt] = deque()
        self.cond = threading.Condition()
        self.current: ExecutorAttempt | None = None
        self.cancelled: dict[tuple[str, int], bool] = {}  # cancels that came before their job: preempt?
        self.outbox = Outbox(_dispatcher(owner), lambda: bool(self.queue))
        threading.Thread(target=self.outbox.run, name="outbox", daemon=True).start()

    def _daemon(self, key: Any) -> None:
        if not key_opens(key, self._key_digest):
            raise PermissionError("executor: a call without the dispatcher's key: refused")

    def take(self, key: bytes, jobs: list[SubmittedAttempt]) -> int:
        """Queue these attempts; the number waiting now."""
        self._daemon(key)
        with self.cond:
            for job in jobs:
                if (job["id"], job["attempt"]) in self.cancelled:
                    self._end_unstarted(job, self.cancelled.pop((job["id"], job["attempt"])))
                else:
                    self.queue.append(job)
            self.cond.notify_all()
            return len(self.queue)

    def release(self, key: bytes) -> list[SubmittedAttempt]:
        """Give back the attempts still queued (the one running holds them up)."""
        self._daemon(key)
        with self.cond:
            jobs, self.queue = list(self.queue), deque()
            return jobs

    def cancel(self, key: bytes, job_id: str, attempt: int, preempt: bool) -> None:
        """Stop this attempt: unqueue it (it ends at once), ask it to stop if it runs, or remember
        the cancel for when it comes (calls may overtake each other)."""
        self._daemon(key)
        with self.cond:
            current = self.current
            if current is not None and (current.job_id, current.attempt) == (job_id, attempt):
                current.stop(preempt)
                return
            for job in self.queue:
                if (job["id"], job["attempt"]) == (job_id, attempt):
                    self.queue.remove(job)
                    self._end_unstarted(job, preempt)
                    return
            self.cancelled[(job_id, attempt)] = preempt

    def _end_unstarted(self, job: SubmittedAttempt, preempt: bool) -> None:
        self.outbox.put("ended", {"job_id": job["id"], "attempt": job["attempt"], "cap": job["cap"], "t": time.time(),
                                  "exit_code": None, "reason": "preempted" if preempt else "cancelled",
                                  "cancelled": not preempt, "preempted": preempt, "batches": 0})

    def serve(self) -> None:
        """Forever: the next queued attempt, run to its end, its outcome reported."""
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                job = self.queue.popleft()
                attempt = self.current = ExecutorAttempt(job, self.owner, self.outbox)
            try:
                out: dict[str, Any] = dict(attempt.run())
            except BaseException as exc:  # noqa: BLE001 - a bug here must not stop the next jobs
                out = {"exit_code": None, "reason": said(exc)}
            with self.cond:
                self.current = None
            self.outbox.put("ended", {"job_id": job["id"], "attempt": job["attempt"], "cap": job["cap"],
                                      "t": time.time(), **out})

"""The dispatcher actor: named, detached, zero CPUs, on the head node. It owns every job task (so
tasks outlive a daemon restart) and keeps the sequence-numbered event log (started / logs / ended)
that the daemon drains with `poll(after)`; an event is dropped only once the daemon has
acknowledged a later cursor, so a restarted daemon misses nothing.

The log data it holds for the daemon is bounded: past LOG_HELD_MAX a `logs` call waits, the
runner waits for its oldest calls, and the job waits on its full pipe. Nothing is dropped.

Any Ray driver can look the actor up by name, so it trusts no caller: the daemon's methods (hello,
submit, cancel, poll) need the daemon's key (the actor keeps only its hash), and an attempt's own
calls (started, logs, pipeline) need the capability the daemon gave that attempt at dispatch,
which reaches its runner as a task argument (never the job's environment). A refused call
changes nothing; the daemon sees the count in `poll` and audits it.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections import deque
from typing import Any, cast

import ray

from .attempt import PROTOCOL, run_job_task
from .executor_pool import ExecutorPool
from .protocol import (
    AttemptOutcome,
    Ended,
    Event,
    EventKind,
    HelloReply,
    Logs,
    Pipeline,
    PollReply,
    Report,
    Started,
    SubmittedAttempt,
    key_hash,
    key_opens,
    said,
)

__all__ = ["LOG_HELD_MAX", "PROTOCOL", "Dispatcher", "key_hash"]

LOG_HELD_MAX = 24 * 1024 * 1024  # log data the actor holds until the daemon acknowledges it (~0.15 s of it)
LOG_WAITING_MAX = 4_000  # log calls waiting at once (of 10,000 slots): past this they go through, so
# poll always finds a slot (thousands of jobs printing faster than the daemon drains)
LATE_SECONDS = 60.0  # an attempt's capability still opens its calls this long after its `ended`
POLL_LINGER = 0.01  # seconds a poll waits for more events while jobs queue on executors


def setup_error(text: str) -> str:
    """The line of Ray's runtime_env error that says what went wrong (pip's own `ERROR:` line,
    else the last line), not its traceback."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return ((errors or lines or ["unknown error"])[-1 if not errors else 0])[:300]


class AttemptCalls:
    """What the dispatcher actor has of one attempt's own calls: its start, how many calls
    arrived, and where its log batches are (Ray may run an async actor's calls out of order;
    they are emitted in the order the runner made them)."""

    __slots__ = ("arrived", "next_log", "started", "unordered", "waiting", "_moved")

    def __init__(self) -> None:
        self.started = False
        self.arrived = 0
        self.next_log = 0  # sequence number of the next batch to emit
        self.waiting = 0  # batches that arrived and wait for their turn or for room
        self.unordered = False  # a call was lost: emit the rest as they come
        self._moved: asyncio.Event | None = None

    async def moved(self) -> None:
        self._moved = self._moved or asyncio.Event()
        await self._moved.wait()

    def move(self) -> None:
        if self._moved is not None:
            self._moved.set()
            self._moved = None


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=10_000)
class Dispatcher:
    """Owns the job tasks and the event log the daemon drains."""

    def __init__(self, key_digest: bytes) -> None:
        self._key_digest = key_digest
        self.caps: dict[tuple[str, int], bytes] = {}  # attempts in flight, or ended < LATE_SECONDS ago
        self.late: deque[tuple[float, tuple[str, int]]] = deque()  # (when to forget, attempt) once ended
        self.preempting: set[str] = set()  # jobs stopped for another: their runner warns them, then stops them
        self.refused = 0  # calls refused since the actor started (the daemon audits the increase)
        self.refused_last = ""  # the latest of them, said in the audit row
        self.epoch = uuid.uuid4().hex
        self.seq = 0
        self.events: deque[Event] = deque()
        self.inflight: dict[str, tuple[int, Any]] = {}
        self.seen: dict[tuple[str, int], AttemptCalls] = {}
        self.log_bytes = 0  # log data in `events` the daemon has not acknowledged
        self.log_waiting = 0  # log calls waiting (each holds one of the actor's max_concurrency slots)
        self._changed: asyncio.Event | None = None
        self._room: asyncio.Event | None = None  # set when log_bytes falls under LOG_HELD_MAX
        self._owner: tuple[str, str, str] | None = None  # how runners find it (attempt._dispatcher)
        self.pool = ExecutorPool(self._end, self._task, lambda job_id: self.inflight.get(job_id, (None,))[0])

    def _refuse(self, what: str) -> PermissionError:
        self.refused += 1
        self.refused_last = what[:200]
        return PermissionError(f"dispatcher: {what}: refused")

    def _daemon(self, key: Any, method: str) -> None:
        """Raise unless `key` is the daemon's."""
        if not key_opens(key, self._key_digest):
            raise self._refuse(f"{method} without the daemon's key")

    def _attempt(self, job_id: Any, attempt: Any, cap: Any, method: str) -> None:
        """Raise unless `cap` is the capability of (job_id, attempt), an attempt dispatched here
        and in flight or just ended."""
        want = self.caps.get((job_id, attempt)) if isinstance(job_id, str) and isinstance(attempt, int) else None
        if want is None or not isinstance(cap, bytes) or not hmac.compare_digest(cap, want):
            raise self._refuse(f"{method} for job {str(job_id)[:64]} attempt {str(attempt)[:12]}: "
                               + ("not dispatched here" if want is None else "wrong capability"))

    def busy(self) -> int:
        """Attempts in flight: all that is told without the key (whether it may be replaced)."""
        return len(self.inflight)

    def hello(self, key: bytes) -> HelloReply:
        self._daemon(key, "hello")
        return {"epoch": self.epoch, "protocol": PROTOCOL, "inflight": len(self.inflight)}

    def _emit(self, kind: EventKind, payload: Started | Logs | Ended | Pipeline) -> None:
        self.seq += 1
        self.events.append(cast(Event, (self.seq, kind, payload)))
        if self._changed is not None:
            self._changed.set()

    async def submit(self, key: bytes, jobs: list[SubmittedAttempt]) -> int:
        self._daemon(key, "submit")
        if self._owner is None:  # asked of Ray at the first use: the class is tested without it
            ctx = ray.get_runtime_context()
            self._owner = (ctx.get_actor_name() or "", ctx.namespace, self.epoch)
        on_executors = []
        for job in jobs:
            self.caps[(job["id"], job["attempt"])] = job["cap"]
            if "node" in job:  # the pool may still run it as a task
                self.inflight[job["id"]] = (job["attempt"], None)
                on_executors.append(job)
            else:
                self._task(job)
        if on_executors:
            await self.pool.place(self._owner, on_executors)
        return len(jobs)

    def _task(self, job: SubmittedAttempt) -> None:
        """Run the attempt as a Ray task of its own, holding its resources in Ray."""
        job_id, attempt, res = job["id"], job["attempt"], job["resources"]
        options: dict[str, Any] = {"num_cpus": res["cpu"], "num_gpus": res["gpu"], "name": f"sage-ops:{job_id}"}
        if res.get("memory"):
            options["memory"] = res["memory"]
        if res.get("custom_resources"):
            options["resources"] = res["custom_resources"]
        if job["spec"].get("pip"):  # Ray builds the virtualenv once per node and list, and caches it
            options["runtime_env"] = {"pip": list(job["spec"]["pip"])}
        assert self._owner is not None
        ref = run_job_task.options(**options).remote(job_id, attempt, job["spec"], self._owner,
                                                     {**job["opts"], "resources": res}, job["cap"])
        self.inflight[job_id] = (attempt, ref)
        asyncio.get_running_loop().create_task(self._watch(job_id, attempt, ref))

    async def report(self, events: list[Report]) -> None:
        """An executor's events, in the order its attempts made them, each opened by its
        attempt's capability; one that is refused (counted) does not hold up the others. Returns
        once the daemon has room for more log data (backpressure)."""
        for event in events:
            try:
                self._reported(*event)
            except PermissionError:
                continue  # counted by _refuse
            except (TypeError, ValueError, KeyError):
                self._refuse(f"report: malformed event {str(event)[:80]}")
        while self.log_bytes >= LOG_HELD_MAX:
            self._room = self._room or asyncio.Event()
            await self._room.wait()

    def _reported(self, kind: str, payload: dict[str, Any]) -> None:
        if not isinstance(payload, dict):
            raise TypeError("not a dict")
        job_id, attempt = payload.get("job_id"), payload.get("attempt")
        self._attempt(job_id, attempt, payload.pop("cap", None), f"report {str(kind)[:20]}")
        assert isinstance(job_id, str) and isinstance(attempt, int)
        if kind == "started":
            self.pool.moved(job_id)
            self._started(job_id, attempt, str(payload["node"])[:256], int(payload["pid"]), float(payload["t"]),
                          str(payload.get("node_id", ""))[:64])
        elif kind == "logs" and isinstance(payload.get("data"), bytes):
            if self.inflight.get(job_id, (None,))[0] == attempt and payload["data"]:
                self.log_bytes += len(payload["data"])
                self._emit("logs", {"job_id": job_id, "attempt": attempt, "data": payload["data"]})
        elif kind == "ended":
            payload.pop("job_id"), payload.pop("attempt"), payload.pop("t", None)
            self._end(job_id, attempt, cast(AttemptOutcome, payload), executor=True)
        else:
            raise ValueError(f"no such event {str(kind)[:20]}")

    async def _watch(self, job_id: str, attempt: int, ref: Any) -> None:
        out: AttemptOutcome
        try:
            out = await ref
        except ray.exceptions.TaskCancelledError:
            out = {"exit_code": None, "reason": "cancelled", "cancelled": True}
        except ray.exceptions.RuntimeEnvSetupError as exc:  # its pip list could not be installed
            out = {"exit_code": None, "reason": f"environment setup failed: {setup_error(str(exc))}"}
        except Exception as exc:  # noqa: BLE001 - worker crash, node death, OOM kill
            out = {"exit_code": None, "reason": said(exc)}
        key = (job_id, attempt)
        calls = self.seen.setdefault(key, AttemptCalls())
        # The task's own calls (started, log batches) were sent before it returned; wait
        # (briefly) until they are all here, then until its log batches are emitted (they may
        # wait for room), so `ended` is always the attempt's last event.
        deadline = time.monotonic() + 10
        while calls.arrived < out.get("batches", 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        if calls.arrived < out.get("batches", 1 << 62):  # one was lost, or unknown (the worker died)
            calls.unordered = True
            calls.move()
        while calls.waiting:
            await calls.moved()
        self._end(job_id, attempt, out)

    def _end(self, job_id: str, attempt: int, out: AttemptOutcome, executor: bool = False) -> None:
        """The attempt's last event (its start first, if it was not reported); its executor, if
        it had one, is free of it. An executor's attempt ends once (its death may come first)."""
        key = (job_id, attempt)
        calls = self.seen.setdefault(key, AttemptCalls())
        where = out.pop("started", None)
        if not calls.started and where:
            self._started(job_id, attempt, **where)
        self.seen.pop(key, None)
        self.late.append((time.monotonic() + LATE_SECONDS, key))
        if self.inflight.get(job_id, (None,))[0] == attempt:
            del self.inflight[job_id]
            self.preempting.discard(job_id)
            self.pool.ended(job_id)
        elif executor:
            return
        self._emit("ended", cast(Ended, {"job_id": job_id, "attempt": attempt, "t": time.time(), **out}))

    def stop_how(self, job_id: str, attempt: int, cap: bytes) -> bool:
        """Asked by a runner whose task was cancelled: is it a preemption (warn, then stop)?"""
        self._attempt(job_id, attempt, cap, "stop_how")
        return job_id in self.preempting

    def started(self, job_id: str, attempt: int, cap: bytes, node: str, pid: int, t: float,
                node_id: str = "") -> None:
        self._attempt(job_id, attempt, cap, "started")
        self._started(job_id, attempt, str(node)[:256], int(pid), float(t), str(node_id)[:64])

    def _started(self, job_id: str, attempt: int, node: str, pid: int, t: float, node_id: str = "") -> None:
        calls = self.seen.setdefault((job_id, attempt), AttemptCalls())
        if calls.started:
            return
        calls.started = True
        if self.inflight.get(job_id, (None,))[0] != attempt:  # arrived after `ended`: already reported
            self.seen.pop((job_id, attempt), None)
            return
        self._emit("started", {"job_id": job_id, "attempt": attempt, "node": node, "pid": pid, "t": t,
                               "node_id": node_id})

    async def logs(self, job_id: str, attempt: int, seq: int, data: bytes, cap: bytes) -> None:
        """Batch `seq` of an attempt's encoded log lines (job_output.encode_lines), emitted after
        the batches before it, and only while the log data the daemon has not acknowledged is
        under LOG_HELD_MAX: a job that prints faster than the daemon drains waits (its runner
        waits for this call), instead of growing `events` without bound. The daemon checks the
        lines again before it stores them (logs.clean_block)."""
        self._attempt(job_id, attempt, cap, "logs")
        if not isinstance(seq, int) or not isinstance(data, bytes):
            raise self._refuse(f"logs for job {job_id[:64]}: malformed call")
        key = (job_id, attempt)
        calls = self.seen.get(key)
        if calls is None and self.inflight.get(job_id, (None,))[0] != attempt:
            calls = AttemptCalls()  # it came after its attempt's `ended`: nothing left to order it with
            calls.unordered = True
        elif calls is None:
            calls = self.seen[key] = AttemptCalls()
        calls.arrived += 1
        calls.waiting += 1
        self.log_waiting += 1
        if self.log_waiting > LOG_WAITING_MAX:  # their data is held either way: let them through
            self._room_made()
        try:
            while seq > calls.next_log and not calls.unordered:
                await calls.moved()
            while self.log_bytes >= LOG_HELD_MAX and self.log_waiting <= LOG_WAITING_MAX:
                self._room = self._room or asyncio.Event()
                await self._room.wait()
        finally:
            calls.waiting -= 1
            self.log_waiting -= 1
        calls.next_log = max(calls.next_log, seq + 1)
        if data:
            self.log_bytes += len(data)
            self._emit("logs", {"job_id": job_id, "attempt": attempt, "data": data})
        calls.move()

    def _room_made(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def pipeline(self, job_id: str, attempt: int, metrics: list[Any], cap: bytes) -> None:
        self._attempt(job_id, attempt, cap, "pipeline")
        self.seen.setdefault((job_id, attempt), AttemptCalls()).arrived += 1
        self._emit("pipeline", {"job_id": job_id, "attempt": attempt, "t": time.time(), "metrics": metrics})

    async def cancel(self, key: bytes, job_id: str, grace: float, preempt: bool = False) -> bool:
        """Stop an attempt (`grace`: how long it may take). `preempt`: its runner, asking why
        (`stop_how`), warns it with its --signal and lets it finish before stopping it."""
        self._daemon(key, "cancel")
        entry = self.inflight.get(job_id)
        if entry is None:
            return False
        if preempt:
            self.preempting.add(job_id)
        if self.pool.holds(job_id):
            await self.pool.cancel(job_id, entry[0], grace, preempt)
            return True
        ref = entry[1]
        ray.cancel(ref)
        deadline = time.monotonic() + grace + 5
        while job_id in self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if job_id in self.inflight:  # the worker is stuck: kill it; the watchdog takes the group
            ray.cancel(ref, force=True)
        return True

    async def poll(self, key: bytes, epoch: str, ack: int, after: int, timeout: float,
                   limit: int = 20_000) -> PollReply:
        """Events after `after`, dropping those up to `ack` (committed by the daemon), plus the
        in-flight set and the count of refused calls.

        Both come from one synchronous step of the actor, so a job missing from `inflight` has
        its `ended` event in `events` (or in an already acknowledged batch).
        """
        self._daemon(key, "poll")
        now = time.monotonic()
        while self.late and self.late[0][0] <= now:
            done = self.late.popleft()[1]
            if self.inflight.get(done[0], (None,))[0] != done[1]:
                self.caps.pop(done, None)
        if epoch != self.epoch:
            ack = after = 0
        while self.events and self.events[0][0] <= ack:
            _seq, kind, payload = self.events.popleft()
            if kind == "logs":
                self.log_bytes -= len(cast(Logs, payload)["data"])
        if self.log_bytes < LOG_HELD_MAX:
            self._room_made()
        if (not self.events or self.events[-1][0] <= after) and timeout > 0:
            self._changed = self._changed or asyncio.Event()
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        if self.pool.queued() and self.events and self.events[-1][0] > after:
            await asyncio.sleep(POLL_LINGER)  # loaded: more events come within ms; one reply for them
        batch: list[Event] = []
        for event in self.events:
            if event[0] > after:
                batch.append(event)
                if len(batch) >= limit:
                    break
        return {"epoch": self.epoch, "events": batch, "inflight": {k: v[0] for k, v in self.inflight.items()},
                "refused": self.refused, "refused_last": self.refused_last,
                "executors": len(self.pool)}

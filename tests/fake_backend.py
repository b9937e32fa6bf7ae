"""A stand-in for `RayBackend` and a clock the test moves, so the real Scheduler runs its rules in
milliseconds: no Ray, no daemon, no subprocess (the dramatiq StubBroker idea).

`FakeBackend` is a `Backend` (scheduling/ports.py): `connected`, `node_totals`, `submit`,
`cancel`, `poll`, `refresh_nodes`. What the dispatcher actor would report, the test says
(`started`, `ended`, `timed_out`): each becomes the event the actor emits, typed as in
backend/protocol.py (its `ended` payload being backend/attempt.py run_job's outcome), and
`deliver` hands them over the way the daemon's poll loop does: `poll`, then `apply_events`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sage_ops.server.backend.protocol import AttemptItem, Ended, Event, EventKind, PollReply, Started
from sage_ops.server.scheduling.queue_items import Clock

if TYPE_CHECKING:
    from sage_ops.server.scheduling.scheduler import Scheduler

SIGTERM_EXIT = 143  # what the runner reports for a process group it ended with SIGTERM (128 + 15)


class FakeClock(Clock):
    """A `Clock` whose time moves only when the test says so."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        super().__init__(now=lambda: self.t)
        self.t = t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeBackend:
    """One Ray cluster of `nodes` (Ray node id -> resources) and its dispatcher actor, in memory.
    The actor outlives a daemon restart: a new Scheduler may be given the same FakeBackend."""

    def __init__(self, clock: FakeClock, nodes: dict[str, dict[str, float]] | None = None,
                 epoch: str = "fake-epoch-1") -> None:
        self.clock = clock
        self.nodes = nodes if nodes is not None else {"ray-node-1": {"CPU": 4.0}}
        self.draining: set[str] = set()
        self.connected = True
        self.detail: str | None = None
        self.epoch = epoch
        self.batches: list[list[AttemptItem]] = []  # every submit, in order
        self.inflight: dict[str, int] = {}  # job id -> attempt, as the actor's `inflight`
        self.cancels: list[tuple[str, float]] = []  # (job id, grace) of every cancel asked for
        self.preempted: list[str] = []  # the jobs asked to stop for another, in order
        self.events: list[Event] = []  # (seq, kind, payload) not yet acknowledged
        self.seq = 0
        self.polls = 0
        self.poll_error: Exception | None = None  # set: every poll raises it (the actor is unreachable)
        self.refusing = False  # the head's address refuses connections (the head is gone)

    # -- the RayBackend surface --------------------------------------------------------------
    def node_totals(self, open_only: bool = False) -> list[tuple[str, dict[str, float]]]:
        return [(n, dict(r)) for n, r in self.nodes.items() if not (open_only and n in self.draining)]

    def refresh_nodes(self) -> None:
        """Nothing to ask: `nodes` is the truth."""

    def head_refuses(self) -> bool:
        return self.refusing

    async def submit(self, jobs: list[AttemptItem]) -> None:
        self.batches.append(jobs)
        for job in jobs:
            self.inflight[job["id"]] = job["attempt"]

    async def cancel(self, job_id: str, grace: float, preempt: bool = False) -> bool:
        """As the actor: an attempt in flight is interrupted; its runner reports it cancelled. A
        preempted one is warned and ends when the test says (`ended`)."""
        self.cancels.append((job_id, grace))
        if job_id not in self.inflight:
            return False
        if preempt:
            self.preempted.append(job_id)
            return True
        self.ended(job_id, SIGTERM_EXIT, "cancelled", cancelled=True)
        return True

    async def poll(self, epoch: str, ack: int, after: int, timeout: float) -> PollReply:
        """The actor's poll: forget what is acknowledged, return what is after `after`."""
        self.polls += 1
        if self.poll_error is not None:
            raise self.poll_error
        if epoch != self.epoch:
            ack = after = 0
        self.events = [e for e in self.events if e[0] > ack]
        return {"epoch": self.epoch, "events": [e for e in self.events if e[0] > after],
                "inflight": dict(self.inflight), "refused": 0, "refused_last": ""}

    # -- what the test makes happen on the cluster -------------------------------------------
    def _emit(self, kind: EventKind, payload: Started | Ended) -> None:
        self.seq += 1
        self.events.append((self.seq, kind, payload))

    def started(self, job_id: str, host: str = "host-1", pid: int = 4242) -> None:
        payload: Started = {"job_id": job_id, "attempt": self.inflight[job_id], "node": host, "pid": pid,
                            "t": self.clock.now(), "node_id": next(iter(self.nodes), "")}
        self._emit("started", payload)

    def ended(self, job_id: str, exit_code: int | None, reason: str | None = None, *, cancelled: bool = False,
              timed_out: bool = False, result: Any = None, preempted: bool = False) -> None:
        """The attempt in flight ended: the payload run_job returns, as the actor reports it."""
        payload: Ended = {"job_id": job_id, "attempt": self.inflight.pop(job_id), "t": self.clock.now(),
                          "exit_code": exit_code, "reason": reason, "result": result, "cancelled": cancelled,
                          "timed_out": timed_out, "preempted": preempted, "batches": 0, "cpu_seconds": 0.5,
                          "max_rss_bytes": 1 << 20}
        self._emit("ended", payload)

    def timed_out(self, job_id: str) -> None:
        """The runner's deadline passed: it ended the process group and said so."""
        self.ended(job_id, SIGTERM_EXIT, "timeout", timed_out=True)

    def dispatched_ids(self) -> list[str]:
        return [job["id"] for batch in self.batches for job in batch]

    async def deliver(self, scheduler: Scheduler) -> None:
        """What the daemon's poll loop does with one reply: apply its events (and commit them)."""
        reconcile = scheduler.term.reconcile
        reply = await self.poll(reconcile.epoch, reconcile.cursor, reconcile.received, 0)
        await reconcile.apply_events(reply["events"])
        await reconcile.drain()

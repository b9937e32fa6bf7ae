"""The job state machine: the only legal transitions, and the audit event each one leaves.

Every state change in the daemon is built here (`transition`) and applied by the store with a
compare-and-set on the old status, so a stale or replayed change can never move a job twice.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple

from .errors import Conflict


class JobStatus(str, Enum):
    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"

    def __str__(self) -> str:
        return self.value


S = JobStatus
TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.REJECTED})
ACTIVE = frozenset(set(S) - TERMINAL)

#: from -> allowed targets. A new attempt is an explicit retry (`retry=True`): a running attempt
#: that failed with retries left goes back to PENDING (the job never shows FAILED meanwhile, so
#: waiters and dependents see only its final outcome), and a user's `retry` brings a finished job
#: (FAILED/CANCELLED/COMPLETED) back to PENDING.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.SUBMITTED: frozenset({S.PENDING, S.REJECTED, S.CANCELLED}),
    S.PENDING: frozenset({S.RUNNING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}
RETRY_FROM = frozenset({S.RUNNING, S.FAILED, S.CANCELLED, S.COMPLETED})
#: what a new job is born as. A job admitted or rejected in the transaction that submits it is
#: born PENDING or REJECTED, with one event: it was never SUBMITTED outside that transaction, and
#: a second event per job doubled what a big batch wrote and what every follower of the event
#: stream read. SUBMITTED is a job accepted while it cannot be admitted yet (Ray not connected).
BORN = frozenset({S.SUBMITTED, S.PENDING, S.REJECTED})


def is_terminal(status: JobStatus | str) -> bool:
    return status in TERMINAL  # a str enum: "FAILED" and JobStatus.FAILED hash alike


def is_legal(old: JobStatus | None, new: JobStatus, retry: bool = False) -> bool:
    if old is None:
        return new in BORN
    if retry:
        return old in RETRY_FROM and new is S.PENDING
    return new in TRANSITIONS[old]


class Transition(NamedTuple):
    """One guarded state change: applied only if the job is still in `old`. (A tuple: immutable
    and cheap, since a 100,000-job batch makes 200,000 of them.)"""

    job_id: str
    old: JobStatus | None
    new: JobStatus
    reason: str = ""
    attempt: int = 0
    #: extra job columns to set together with the status (exit_code, ended_at, ...); never mutated
    fields: dict[str, Any] = {}  # noqa: RUF012


def transition(
    job_id: str, old: JobStatus | None, new: JobStatus, reason: str = "", attempt: int = 0,
    retry: bool = False, **fields: Any,
) -> Transition:
    """Build a transition, refusing an illegal one (a bug or a request that came too late)."""
    if not is_legal(old, new, retry):
        raise Conflict(f"job {job_id} is {old}; it cannot become {new}")
    return Transition(job_id, old, new, reason, attempt, fields)


def amend(job_id: str, status: JobStatus, reason: str, **fields: Any) -> Transition:
    """A change of a job's fields that keeps its status (a new priority while it waits): guarded by
    that status like a transition, and audited like one."""
    return Transition(job_id, status, status, reason, 0, fields)


def attempt_outcome(exit_code: int | None, cancelled: bool, reason: str | None) -> tuple[JobStatus, str]:
    """Where an ended attempt leaves its job, and why."""
    if cancelled:
        return S.CANCELLED, reason or "cancelled"
    if exit_code == 0:
        return S.COMPLETED, "exit code 0"
    if exit_code is None:
        return S.FAILED, reason or "the job's worker died"
    return S.FAILED, reason or f"exit code {exit_code}"


# -- nodes: the machines sage-ops added (server/services/provisioning.py applies these) ----------------
class NodeStatus(str, Enum):
    JOINING = "JOINING"  # bootstrap under way
    UP = "UP"  # a Ray node that takes jobs
    FAILED = "FAILED"  # the bootstrap failed (the detail names the step); add it again
    DRAINING = "DRAINING"  # no new jobs; waiting for its running jobs, then its Ray stops
    DRAINED = "DRAINED"  # its Ray stopped; `nodes remove` forgets it

    def __str__(self) -> str:
        return self.value


N = NodeStatus
NODE_TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    N.JOINING: frozenset({N.UP, N.FAILED}),
    N.UP: frozenset({N.JOINING, N.DRAINING}),  # adding an UP node again checks it (idempotent)
    N.FAILED: frozenset({N.JOINING}),
    N.DRAINING: frozenset({N.DRAINED}),
    N.DRAINED: frozenset({N.JOINING}),  # brought back by adding it again
}


def node_transition(name: str, old: NodeStatus | None, new: NodeStatus) -> NodeStatus:
    """Check a node's change of state (None: a new node, which starts JOINING)."""
    if (old is None and new is N.JOINING) or (old is not None and new in NODE_TRANSITIONS[old]):
        return new
    raise Conflict(f"node {name} is {old}; it cannot become {new}")

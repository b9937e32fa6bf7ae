"""The messages between the daemon, its dispatcher actor and an attempt's runner, in one place.

    daemon (scheduling/dispatch.py, ray_backend.py)  --submit([SubmittedAttempt])-->  actor (actor.py)
    actor  --run_job(..., AttemptOptions)-->  runner (attempt.py)  --started / logs / pipeline-->  actor
    runner --returns AttemptOutcome-->  actor  --poll: PollReply of Events-->  daemon (scheduling/reconcile.py)
    actor  --take([SubmittedAttempt])-->  executor (executor.py)  --report([Report])-->  actor

Every message is a plain dict (Ray pickles it; a daemon and an older actor still understand each
other), typed here. This file is part of the actor's code hash (attempt._code_version): changing a
message replaces an idle actor of the older shape. Imported on Ray workers: standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal, TypedDict

__all__ = ["PAYLOADS", "AttemptItem", "AttemptKey", "AttemptOptions", "AttemptOutcome", "AttemptResources", "Ended",
           "Event", "EventKind", "HelloReply", "Logs", "Measured", "Outcome", "Pipeline", "PollReply", "Report",
           "Started", "SubmittedAttempt", "Where", "key_hash", "key_opens", "said"]


# -- daemon -> actor -> runner: one attempt to run ------------------------------------------------
class AttemptResources(TypedDict):
    """What the attempt holds on its node: the job's `Resources.model_dump()` (memory in bytes)."""

    cpu: float
    memory: int | None
    gpu: float
    custom_resources: dict[str, float]


class _Limits(TypedDict):
    timeout: float  # seconds: the runner ends the process group past it
    kill_grace: float  # seconds between SIGTERM and SIGKILL
    max_log_bytes: int
    max_result_bytes: int
    run_as: str | None  # the OS user it runs as (None: the daemon's own, sandboxed by `hide`)


class AttemptOptions(_Limits, total=False):
    """How the daemon (dispatch.py `_options`) wants the attempt run; the actor adds `resources`
    before it hands them to the runner."""

    hide: list[str]  # paths a job of the daemon's own user must not see
    warn_signal: str  # --signal: sent warn_seconds before the time limit, and on preemption
    warn_seconds: float
    secret_env: str  # the job's secrets sealed for this attempt (transit.seal)
    secret_error: str  # why its secrets could not be sealed: the attempt fails at once, saying so
    resources: AttemptResources
    package: Any  # the job's shipped working directory: an ObjectRef of its tar.gz (ray_backend.py puts it)
    package_error: str  # why its package could not be sent: the attempt fails at once, saying so


class _Attempt(TypedDict):
    id: str
    attempt: int
    resources: AttemptResources
    spec: dict[str, Any]  # the job's JobSpec.model_dump(mode="json")
    opts: AttemptOptions


class AttemptItem(_Attempt, total=False):
    """One attempt the daemon hands to the backend (dispatch.py `_take_runnable`)."""

    node: str  # run on this Ray node's executor (executor.py), not a task of its own; "": on the least
    # busy executor anywhere (a prefetched job, charged to no node)


class SubmittedAttempt(AttemptItem):
    """An `AttemptItem` as RayBackend.submit sends it to the actor: with the attempt's capability,
    which alone opens the runner's own calls (started, logs, pipeline)."""

    cap: bytes


# -- runner -> actor -> daemon: what happened ----------------------------------------------------
class AttemptKey(TypedDict):
    job_id: str
    attempt: int


class Where(TypedDict):
    """Where and when an attempt's process group started (the runner's `started` call)."""

    node: str  # the sage-ops node name (its NODE_ENV), else the host name
    pid: int
    t: float
    node_id: str  # the Ray node id


class _Exit(TypedDict):
    exit_code: int | None  # None: it has none (its worker died, it was cancelled before it ran)
    reason: str | None  # why it ended, when not by itself with exit code 0 (timeout, cancelled, a signal...)


class Measured(TypedDict, total=False):
    """What the attempt used (usage.py), when its runner measured it: not when it never started."""

    cpu_seconds: float
    max_rss_bytes: int


class Outcome(_Exit, Measured, total=False):
    """How an attempt ended: what run_job returns, or what the actor says when its task failed
    (a worker crash, a node death) or was cancelled before it ran."""

    result: Any  # the job's result file, parsed (None: none)
    cancelled: bool
    preempted: bool  # stopped for a job of higher priority (the daemon requeues it)
    timed_out: bool
    batches: int  # the runner's calls (log batches, pipeline metrics): the actor awaits them all first


class AttemptOutcome(Outcome, total=False):
    """What run_job returns to the actor: an `Outcome`, and where it started (if it did), which the
    actor reports itself when the runner's own `started` call did not come first."""

    started: Where


class Started(AttemptKey, Where):
    """Event: the attempt's process group runs (the runner's `started` call, or its outcome)."""


class Logs(AttemptKey):
    """Event: one batch of the attempt's output, encoded lines (job_output.encode_lines), emitted
    in the order the runner sent them."""

    data: bytes


class Pipeline(AttemptKey):
    """Event: a pipeline job's latest operator metrics (job_output.Control), at most one per
    METRICS_SECONDS."""

    t: float
    metrics: list[Any]


class Ended(AttemptKey, Outcome):
    """Event: the attempt is over; always its last event. Emitted once its runner's calls are in."""

    t: float


EventKind = Literal["started", "logs", "ended", "pipeline"]
PAYLOADS: dict[str, type] = {"started": Started, "logs": Logs, "ended": Ended, "pipeline": Pipeline}
Event = (tuple[int, Literal["started"], Started] | tuple[int, Literal["logs"], Logs]
         | tuple[int, Literal["ended"], Ended] | tuple[int, Literal["pipeline"], Pipeline])
"""(sequence number, kind, payload): the actor numbers its events; the daemon acknowledges a number."""


Report = tuple[Literal["started", "logs", "ended"], dict[str, Any]]
"""An executor's event (executor -> actor `report`): the payload of that kind, and the attempt's
capability under "cap"."""


def key_hash(key: bytes) -> bytes:
    """What the actor and its executors keep of the daemon's key: enough to check it, not to use it."""
    return hashlib.sha256(b"sage-ops dispatcher key\0" + key).digest()


def key_opens(key: Any, digest: bytes) -> bool:
    """Whether a caller's `key` is the one whose hash is `digest` (in constant time)."""
    return isinstance(key, bytes) and hmac.compare_digest(key_hash(key), digest)


def said(exc: BaseException, limit: int = 300) -> str:
    """An error as an attempt's reason says it: its type and its first line."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit] if text else ''}"


# -- actor -> daemon: replies ------------------------------------------------------------------------
class _PollReply(TypedDict):
    epoch: str  # this actor's life: another one means the actor was replaced (its jobs are lost)
    events: list[Event]  # those after `after`, oldest first, at most `limit`
    inflight: dict[str, int]  # job id -> the attempt running
    refused: int  # calls refused since the actor started (the daemon audits the increase)
    refused_last: str  # the latest of them


class PollReply(_PollReply, total=False):
    """The actor's answer to `poll(epoch, ack, after, timeout)`, taken in one synchronous step: an
    attempt missing from `inflight` has its `ended` in `events` or in an acknowledged batch."""

    executors: int  # executors alive (an older actor does not say)


class HelloReply(TypedDict):
    """The actor's answer to `hello` when the daemon attaches: an idle actor of another code
    version (`protocol`) is replaced."""

    epoch: str
    protocol: str
    inflight: int

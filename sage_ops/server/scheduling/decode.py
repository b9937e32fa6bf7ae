"""What a batch of the Ray dispatcher actor's events means, decided without touching anything:
the guarded transitions to commit, the attempt rows to write, the log blocks to store, and which
dispatched attempts started or ended. Pure, so the rules are tested without a store or a loop;
reconcile.py applies the result (memory, then one transaction)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from ...lifecycle import JobStatus, Transition, attempt_outcome, transition
from ..backend.protocol import Ended, Event, Logs, Pipeline, Started
from .outcomes import failure
from .queue_items import Dispatched

S = JobStatus


@dataclass
class Move:
    """A transition to apply; if it does not apply and `alt` does (an attempt that ended without
    its `started` having arrived), `alt` first; `row` is the attempt row that a start inserts."""

    main: Transition
    alt: Transition | None = None
    row: dict[str, Any] | None = None


@dataclass
class Decoded:
    blocks: list[tuple[str, int, Any]] = field(default_factory=list)  # (job, attempt, encoded lines)
    old_lines: list[tuple[str, list[tuple[Any, ...]]]] = field(default_factory=list)  # from an older actor
    moves: list[Move] = field(default_factory=list)
    attempt_updates: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # a pipeline's latest operator metrics
    started: list[tuple[str, float, str]] = field(default_factory=list)  # (job, time, where) of a dispatched attempt
    ended: list[tuple[str, float]] = field(default_factory=list)  # (job, time) of a dispatched attempt


def usage(p: Mapping[str, Any]) -> dict[str, Any]:
    """An attempt's CPU seconds and peak memory from its `ended` event, when its runner measured
    them (not when its worker died); anything but a finite non-negative number is left out."""
    out: dict[str, Any] = {}
    for key, kind in (("cpu_seconds", float), ("max_rss_bytes", int)):
        value = p.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 2**62:
            out[key] = kind(value)
    return out


def preempted(d: Dispatched | None, attempt: int, p: Ended) -> bool:
    """Did this attempt end because the daemon preempted it? (Its runner says so too, which
    counts after a restart, when the daemon no longer remembers asking.)"""
    return (d is not None and d.attempt == attempt and not d.cancelling
            and (d.preempting is not None or bool(p.get("preempted"))))


def ended_transition(d: Dispatched | None, job_id: str, attempt: int, p: Ended, status: JobStatus,
                     reason: str) -> Transition:
    """A failed attempt of the dispatched job is retried by its policy; anything else ends it."""
    fields: dict[str, Any] = {"exit_code": p.get("exit_code"),
                              "result": json.dumps(p["result"]) if p.get("result") is not None else None}
    if preempted(d, attempt, p):
        # stopped for another job: back in the queue, and the attempt not counted against its retries
        assert d is not None
        return transition(job_id, S.RUNNING, S.PENDING, f"preempted by {d.preempting or 'a job of higher priority'}; "
                          "requeued", attempt, retry=True, retry_base=d.job.retry_base + 1, not_before=None,
                          exit_code=None, result=None)
    if status is S.FAILED and d is not None and d.attempt == attempt and not d.cancelling:
        return failure(d.job, S.RUNNING, attempt, reason, p["t"], **fields)
    return transition(job_id, S.RUNNING, status, reason, attempt, ended_at=p["t"], **fields)


def decode(events: list[Event], dispatched: Mapping[str, Dispatched]) -> Decoded:
    out = Decoded()
    ran_on: dict[str, str] = {}  # where an attempt started, reported in this batch
    done: set[str] = set()  # dispatched attempts that ended in this batch: no longer in flight
    for _seq, kind, payload in events:
        job_id, attempt = payload["job_id"], payload["attempt"]
        d = None if job_id in done else dispatched.get(job_id)
        ours = d is not None and d.attempt == attempt
        if kind == "logs":
            logs = cast(Logs, payload)
            if "data" in logs:
                out.blocks.append((job_id, attempt, logs["data"]))
            elif "lines" in logs:  # from an actor of an older version (replaced once idle)
                out.old_lines.append((job_id, [tuple(x) for x in cast(dict[str, Any], logs)["lines"]]))
        elif kind == "pipeline":
            pipe = cast(Pipeline, payload)
            out.stats[job_id] = {"job_id": job_id, "attempt": attempt, "data": json.dumps(pipe["metrics"]),
                                 "updated_at": pipe["t"]}
        elif kind == "started":
            p = cast(Started, payload)
            if ours:
                ray_node = p.get("node_id", "")[:8]
                ran_on[job_id] = f"{p['node']} (Ray node {ray_node})" if ray_node else p["node"]
                out.started.append((job_id, p["t"], ran_on[job_id]))
            row = {"job_id": job_id, "number": attempt, "status": S.RUNNING.value, "node": p["node"],
                   "pid": p["pid"], "started_at": p["t"]}
            out.moves.append(Move(transition(job_id, S.PENDING, S.RUNNING, f"attempt {attempt} on {p['node']}",
                                             attempt, started_at=p["t"], node=p["node"], attempts_made=attempt),
                                  None, row))
        elif kind == "ended":
            e = cast(Ended, payload)
            status, reason = attempt_outcome(e.get("exit_code"), bool(e.get("cancelled")), e.get("reason"))
            where = ran_on.get(job_id) or (d.ran_on if d is not None else None)
            if e.get("exit_code") is None and not e.get("cancelled") and where:
                reason = f"node {where}: {reason}"  # its worker or node died: say where
            if preempted(d, attempt, e):
                status, reason = S.CANCELLED, "preempted"  # the attempt's; the job is requeued
            # if its `started` never arrived (it could not start), it still ran as an attempt
            alt = transition(job_id, S.PENDING, S.RUNNING, f"attempt {attempt}", attempt, started_at=e["t"],
                             attempts_made=attempt)
            out.moves.append(Move(ended_transition(d, job_id, attempt, e, status, reason), alt,
                                  {"job_id": job_id, "number": attempt, "status": S.RUNNING.value,
                                   "started_at": e["t"]}))
            out.attempt_updates.append((job_id, attempt, {"status": status.value, "exit_code": e.get("exit_code"),
                                                          "reason": reason, "ended_at": e["t"], **usage(e)}))
            if ours:
                out.ended.append((job_id, e["t"]))
                done.add(job_id)
    return out

"""What a batch of the dispatcher actor's events means (scheduling/decode.py), decided without a
store, a loop or Ray: the pure step of reconcile."""

from __future__ import annotations

from typing import Any

from sage_ops.lifecycle import JobStatus
from sage_ops.schemas import JobSpec
from sage_ops.server.scheduling.decode import decode
from sage_ops.server.scheduling.queue_items import Dispatched, Queued

S = JobStatus


def dispatched(job_id: str = "j1", attempt: int = 1, **spec: Any) -> dict[str, Dispatched]:
    job = Queued.of(job_id, 1, JobSpec(command=["true"], **spec), S.PENDING)
    return {job_id: Dispatched(job, attempt, "node-a")}


def started(seq: int, job_id: str = "j1", attempt: int = 1) -> tuple[int, str, dict[str, Any]]:
    return (seq, "started", {"job_id": job_id, "attempt": attempt, "node": "host-a", "node_id": "abcdef0123",
                             "pid": 42, "t": 10.0})


def ended(seq: int, exit_code: int | None, job_id: str = "j1", attempt: int = 1, **more: Any) -> tuple[int, str, Any]:
    return (seq, "ended", {"job_id": job_id, "attempt": attempt, "t": 12.0, "exit_code": exit_code,
                           "reason": more.pop("reason", None), **more})


def test_a_worker_that_died_is_named_by_the_node_its_attempt_started_on() -> None:
    out = decode([started(1), ended(2, None, reason="worker died")], dispatched())
    assert out.moves[1].main.reason.startswith("node host-a (Ray node abcdef01): ")


def test_an_attempt_that_ended_without_its_start_still_counts_as_an_attempt() -> None:
    out = decode([ended(1, 1)], dispatched())
    assert getattr(out.moves[0].alt, "new", None) is S.RUNNING


def test_a_failed_attempt_with_retries_left_goes_back_to_pending() -> None:
    out = decode([ended(1, 1)], dispatched(retry_policy={"max_retries": 1}))
    assert out.moves[0].main.new is S.PENDING


def test_an_ended_attempt_of_another_attempt_number_frees_nothing() -> None:
    out = decode([ended(1, 0, attempt=2)], dispatched(attempt=3))
    assert out.ended == []


def test_an_attempt_reported_ended_twice_is_freed_once() -> None:
    out = decode([ended(1, 0), ended(2, 0)], dispatched())
    assert out.ended == [("j1", 12.0)]


def test_the_usage_an_attempt_measured_reaches_its_attempt_row() -> None:
    out = decode([ended(1, 0, cpu_seconds=1.5, max_rss_bytes=1 << 20)], dispatched())
    assert (out.attempt_updates[0][2]["cpu_seconds"], out.attempt_updates[0][2]["max_rss_bytes"]) == (1.5, 1 << 20)

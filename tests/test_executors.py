"""Short jobs on long-lived executors (backend/executor.py, executor_pool.py): which jobs go there
(the rules, on the real Scheduler with a fake cluster, in milliseconds), and what a user still
gets from a job that ran on one, on a real Ray head: its output, exit code and result, cancel,
timeout, a job never stuck behind a long one, and an executor's death said as the reason."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, wait_until
from fake_backend import FakeBackend, FakeClock
from test_scheduler_rules import Rig, open_store

from sage_ops.lifecycle import TERMINAL, JobStatus
from sage_ops.server.backend.actor import Dispatcher
from sage_ops.server.backend.executor import Executor
from sage_ops.server.backend.executor_pool import ExecutorPool
from sage_ops.server.backend.protocol import key_hash
from sage_ops.server.scheduling.capacity import PREFETCH_SECONDS
from sage_ops.server.storage import store as st

S = JobStatus
SHORT = 0.01  # seconds: what recent jobs ran, as the capacity's average says


@pytest.fixture
def store(tmp_path: Path) -> Iterator[st.Store]:
    s = open_store(tmp_path)
    yield s
    s.close()


async def short_rig(tmp_path: Path, store: st.Store, cpus: float = 4.0, **jobmanager: Any) -> Rig:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"node-a": {"CPU": cpus, "GPU": 1.0}}),
                    **jobmanager).start()
    rig.sched.state.capacity.recent_runtime = SHORT
    return rig


async def handed(rig: Rig, **spec: Any) -> dict[str, Any]:
    """The item the scheduler hands to the backend for one job of `spec`."""
    job_id = await rig.submit(**spec)
    await rig.step()
    return next(dict(item) for batch in rig.backend.batches for item in batch if item["id"] == job_id)


# -- which jobs go to an executor -------------------------------------------------------------------
async def test_a_plain_job_goes_to_its_nodes_executor_while_recent_jobs_ran_short(tmp_path: Path,
                                                                                   store: st.Store) -> None:
    rig = await short_rig(tmp_path, store)
    assert (await handed(rig)).get("node") == "node-a"


async def test_a_job_runs_as_its_own_task_while_recent_jobs_ran_long(tmp_path: Path, store: st.Store) -> None:
    rig = await short_rig(tmp_path, store)
    rig.sched.state.capacity.recent_runtime = 5.0
    assert "node" not in await handed(rig)


async def test_a_job_with_a_pip_list_runs_as_its_own_task(tmp_path: Path, store: st.Store) -> None:
    rig = await short_rig(tmp_path, store)
    assert "node" not in await handed(rig, pip=["six"])


async def test_a_job_in_an_image_runs_as_its_own_task(tmp_path: Path, store: st.Store) -> None:
    rig = await short_rig(tmp_path, store)
    assert "node" not in await handed(rig, image="docker.io/library/busybox")


async def test_a_gpu_job_runs_as_its_own_task(tmp_path: Path, store: st.Store) -> None:
    rig = await short_rig(tmp_path, store)
    assert "node" not in await handed(rig, resources={"gpu": 1})


async def test_no_job_goes_to_an_executor_when_executors_are_off(tmp_path: Path, store: st.Store) -> None:
    rig = await short_rig(tmp_path, store, executors=False)
    assert "node" not in await handed(rig)


async def test_short_jobs_are_prefetched_to_executors_up_to_the_work_of_prefetch_seconds(tmp_path: Path,
                                                                                           store: st.Store) -> None:
    rig = await short_rig(tmp_path, store, cpus=1.0, prefetch=2)
    for _ in range(40):
        await rig.submit()
    batch = await rig.sched.term.dispatch.once()
    assert len(batch) == 1 + int(PREFETCH_SECONDS * 1.0 / SHORT)


async def test_a_prefetched_job_may_go_to_any_nodes_executor(tmp_path: Path, store: st.Store) -> None:
    rig = await short_rig(tmp_path, store, cpus=1.0, prefetch=2)
    await rig.submit()
    second = await handed(rig)
    assert second["node"] == ""


async def test_without_executors_the_prefetch_stays_as_configured(tmp_path: Path, store: st.Store) -> None:
    rig = await short_rig(tmp_path, store, cpus=1.0, prefetch=2, executors=False)
    for _ in range(40):
        await rig.submit()
    batch = await rig.sched.term.dispatch.once()
    assert len(batch) == 1 + 2


# -- calls without the keys -------------------------------------------------------------------------
async def test_a_report_with_a_wrong_capability_is_refused_and_counted() -> None:
    d = Dispatcher.__ray_actor_class__(key_hash(b"k" * 32))
    d.caps[("job-1", 1)] = b"c" * 32
    d.inflight["job-1"] = (1, None)
    await d.report([("ended", {"job_id": "job-1", "attempt": 1, "cap": b"x" * 32, "exit_code": 0})])
    assert (d.refused, d.inflight) == (1, {"job-1": (1, None)})


async def test_a_malformed_report_event_is_refused_and_the_next_one_still_counts() -> None:
    d = Dispatcher.__ray_actor_class__(key_hash(b"k" * 32))
    d.caps[("job-1", 1)] = b"c" * 32
    d.inflight["job-1"] = (1, None)
    await d.report([("started", {"job_id": "job-1", "attempt": 1, "cap": b"c" * 32}),  # no node, pid, t
                    ("ended", {"job_id": "job-1", "attempt": 1, "cap": b"c" * 32, "exit_code": 0, "reason": None})])
    assert (d.refused, d.inflight, [e[1] for e in d.events]) == (1, {}, ["ended"])


def test_an_executor_refuses_a_take_without_the_dispatchers_key() -> None:
    cls = Executor.__ray_actor_class__
    ex = cls.__new__(cls)
    ex._key_digest = key_hash(b"k" * 32)
    with pytest.raises(PermissionError):
        ex.take(b"not the key", [])


async def test_the_pools_clock_stops_with_its_last_executor() -> None:
    """A dispatcher whose daemon is gone, its executors stopped, wakes no more."""
    pool = ExecutorPool(lambda *_: None, lambda _: None, lambda _: None)
    pool.ticking = asyncio.get_running_loop().create_task(pool._tick())
    await pool.ticking
    assert pool.ticking is None


# -- on a real Ray head -----------------------------------------------------------------------------
def warm(daemon: Daemon, n: int = 30) -> None:
    """Enough short jobs that the daemon's recent runtimes are short: the next go to executors."""
    ids = [daemon.submit_q("--cpu", "0", "--", "true") for _ in range(n)]
    client = daemon.client()
    wait_until(lambda: all(client.get_job(i).status is S.COMPLETED for i in ids), timeout=120)


def ended(daemon: Daemon, job_id: str) -> Any:
    """The job's view once it has ended."""
    client = daemon.client()
    return wait_until(lambda: (j := client.get_job(job_id)).status in TERMINAL and j, timeout=60)


def parent_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{ppid}/cmdline", "rb") as f:
        return f.read().decode(errors="replace")


def leader(daemon: Daemon, job_id: str) -> int | None:
    """The pid of the running attempt's process group leader."""
    job = daemon.client().get_job(job_id)
    return job.attempts[-1].pid if job.status is S.RUNNING and job.attempts else None


def running_on_executor(daemon: Daemon, job_id: str) -> bool:
    pid = leader(daemon, job_id)
    return pid is not None and parent_of(pid).startswith("ray::Executor")


def test_short_jobs_on_executors_keep_their_output_exit_code_and_result(daemon: Daemon) -> None:
    warm(daemon)
    script = 'echo hello; echo \'{"x": 1}\' > "$SAGE_OPS_RESULT_FILE"; exit 3'
    job_id = daemon.submit_q("--cpu", "0", "--", "sh", "-c", script)
    job = ended(daemon, job_id)
    assert (job.status, job.exit_code) == (S.FAILED, 3)
    assert "hello" in daemon.run("logs", job_id, check=True).stdout
    assert daemon.client().health_check().ray.executors >= 1


def test_a_job_on_an_executor_is_cancelled_and_its_executor_runs_the_next(daemon: Daemon) -> None:
    warm(daemon)
    job_id = daemon.submit_q("--cpu", "0", "--", "sleep", "120")
    wait_until(lambda: running_on_executor(daemon, job_id))
    daemon.run("cancel", job_id, check=True)
    assert ended(daemon, job_id).status is S.CANCELLED
    after = daemon.submit_q("--cpu", "0", "--", "true")
    assert ended(daemon, after).status is S.COMPLETED


def test_a_job_on_an_executor_is_stopped_at_its_timeout(daemon: Daemon) -> None:
    warm(daemon)
    job_id = daemon.submit_q("--cpu", "0", "--timeout", "1", "--", "sleep", "120")
    job = ended(daemon, job_id)
    assert (job.status, job.reason) == (S.FAILED, "timeout")


def test_no_job_waits_long_behind_another_on_an_executor(daemon: Daemon) -> None:
    """More one-CPU jobs than the node has CPUs, each sleeping long: those queued behind another
    on an executor are given back and run as tasks of their own, so all run at once."""
    warm(daemon)
    ids = [daemon.submit_q("--cpu", "1", "--", "sleep", "120") for _ in range(6)]  # the test head has 4 CPUs
    client = daemon.client()
    try:
        assert wait_until(lambda: all(client.get_job(i).status is S.RUNNING for i in ids), timeout=60)
    finally:
        client.cancel_jobs(ids)


def test_a_node_running_eight_half_cpu_jobs_has_an_executor_for_each(daemon: Daemon) -> None:
    """An executor per job the daemon counts as running, not per CPU: eight 0.5-CPU jobs on the
    test head's 4 CPUs all run at once, each on an executor (none waits behind another)."""
    warm(daemon)
    ids = [daemon.submit_q("--cpu", "0.5", "--", "sleep", "120") for _ in range(8)]
    try:
        assert wait_until(lambda: all(running_on_executor(daemon, i) for i in ids), timeout=60)
    finally:
        daemon.client().cancel_jobs(ids)


def test_an_executors_death_ends_its_job_saying_so_and_the_next_job_runs(daemon: Daemon) -> None:
    warm(daemon)
    job_id = daemon.submit_q("--cpu", "0", "--", "sleep", "120")
    wait_until(lambda: running_on_executor(daemon, job_id))
    with open(f"/proc/{leader(daemon, job_id)}/stat") as f:
        executor = int(f.read().rsplit(")", 1)[1].split()[1])
    os.kill(executor, signal.SIGKILL)
    assert "its executor died" in (ended(daemon, job_id).reason or "")
    after = daemon.submit_q("--cpu", "0", "--", "true")
    assert ended(daemon, after).status is S.COMPLETED


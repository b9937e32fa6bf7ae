"""The queue's rules, on the real Scheduler (its admission, dispatch, reconcile, outcomes and
operations, capacity and quotas) over a real SQLite store, with a fake cluster and a fake clock
(tests/fake_backend.py): each test runs in milliseconds, without Ray, a daemon or a subprocess.
What only Ray can show (process groups, dead workers, nodes, reattach to a live actor) stays in
the end-to-end tests."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_backend import SIGTERM_EXIT, FakeBackend, FakeClock
from hypothesis import given, settings
from hypothesis import strategies as hs

from sage_ops.access import Quotas
from sage_ops.bodies import JobUpdate
from sage_ops.config import Config
from sage_ops.errors import Conflict, Invalid, Rejected
from sage_ops.lifecycle import JobStatus
from sage_ops.schemas import JobSpec
from sage_ops.server.scheduling import admission
from sage_ops.server.scheduling.reconcile import LOST_AFTER, LOST_AFTER_REFUSED
from sage_ops.server.scheduling.run_as import RunAs
from sage_ops.server.scheduling.scheduler import Scheduler
from sage_ops.server.storage import job_arrays
from sage_ops.server.storage import store as st
from sage_ops.server.storage.database import fetchall
from sage_ops.server.storage.logs import LogStore
from sage_ops.server.storage.sealing import Sealer
from sage_ops.views import JobView, Pending, PendingCode

S = JobStatus


def open_store(root: Path) -> st.Store:
    return st.Store(f"sqlite:///{root / 'sage-ops.db'}", "OFF")


class Rig:
    """One daemon's queue: a Scheduler over `store`, its fake cluster and clock. The test moves
    it step by step: `step` is one pass of the dispatch loop, `end` one poll of the actor."""

    def __init__(self, root: Path, store: st.Store, backend: FakeBackend, pools: list[dict[str, Any]] | None = None,
                 **jobmanager: Any) -> None:
        key = root / "secret.key"
        self.cfg = Config(jobmanager={"prefetch": 0, **jobmanager}, storage={"path": root / "storage"},
                          nodes={"pools": pools or []},
                          security={"switch_users": "off", "sandbox": "off", "secret_key_file": key})
        self.store, self.backend, self.clock = store, backend, backend.clock
        self.sched = Scheduler(self.cfg, store, backend, LogStore(root / "logs"), backend.clock,  # type: ignore[arg-type]
                               run_as=RunAs("off", "off"), sealer=Sealer(key))

    async def start(self, load: bool = True) -> Rig:
        """As the daemon when elected: load the queue, then recover once Ray is there."""
        if load:
            await self.sched.begin_term()
        await self.sched.recover()
        return self

    async def submit(self, **spec: Any) -> str:
        views, _ = await self.sched.submit([JobSpec(command=["true"], **spec)])
        return str(views[0].id)

    async def step(self) -> list[str]:
        """One pass of the dispatch loop: the ids it handed to the cluster."""
        batch = await self.sched.term.dispatch.once()
        await asyncio.gather(*self.sched.state.background)  # reasons of the jobs a quota holds
        return [job["id"] for job in batch]

    async def end(self, job_id: str, code: int | None = 0, reason: str | None = None) -> None:
        self.backend.ended(job_id, code, reason)
        await self.backend.deliver(self.sched)

    async def view(self, job_id: str) -> JobView:
        return await self.store.read(lambda c: st.get_job(c, job_id))

    async def status(self, job_id: str) -> JobStatus:
        return (await self.view(job_id)).status

    async def reason(self, job_id: str) -> str | None:
        return (await self.view(job_id)).reason

    async def pending(self, job_id: str) -> Pending:
        """Why the job waits, as `status` shows it (the leader's live explanation)."""
        view = await self.view(job_id)
        self.sched.explain([view])
        assert view.pending is not None, f"{job_id} is {view.status}, not explained"
        return view.pending

    async def run(self, job_id: str) -> None:
        """The dispatched attempt starts running now."""
        self.backend.started(job_id)
        await self.backend.deliver(self.sched)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[st.Store]:
    s = open_store(tmp_path)
    yield s
    s.close()


@pytest.fixture
def cluster() -> FakeBackend:
    return FakeBackend(FakeClock(), {"ray-node-1": {"CPU": 4.0}})


@pytest.fixture
async def rig(tmp_path: Path, store: st.Store, cluster: FakeBackend) -> AsyncIterator[Rig]:
    yield await Rig(tmp_path, store, cluster).start()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, st.Store]]:
    """One store for all examples of a property: each example's scheduler starts without loading
    it, so it sees only its own jobs (a store per example would cost 30 ms each)."""
    root = tmp_path_factory.mktemp("rules")
    s = open_store(root)
    yield root, s
    s.close()


def fresh(shared: tuple[Path, st.Store], nodes: dict[str, dict[str, float]], **jobmanager: Any) -> Rig:
    root, s = shared
    return Rig(root, s, FakeBackend(FakeClock(), nodes), **jobmanager)


async def drain_one_at_a_time(rig: Rig) -> list[str]:
    """Dispatch and complete until nothing is left: the order the jobs were handed to Ray."""
    order: list[str] = []
    while ids := await rig.step():
        order += ids
        for job_id in ids:
            await rig.end(job_id)
    return order


# -- priority order and reservation --------------------------------------------------------
async def test_higher_priority_first_then_first_come_first_served(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 1.0}})).start()
    low1 = await rig.submit(priority=0)
    high = await rig.submit(priority=5)
    low2 = await rig.submit(priority=0)
    assert await drain_one_at_a_time(rig) == [high, low1, low2]


@settings(max_examples=30, deadline=None)
@given(hs.lists(hs.integers(-3, 3), min_size=1, max_size=8))
def test_any_priorities_dispatch_sorted_by_priority_then_submission(shared: tuple[Path, st.Store],
                                                                    priorities: list[int]) -> None:
    async def run() -> None:
        rig = await fresh(shared, {"n": {"CPU": 1.0}}).start(load=False)
        ids = [await rig.submit(priority=p) for p in priorities]
        expected = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-priorities[i], i))]
        assert await drain_one_at_a_time(rig) == expected

    asyncio.run(run())


async def seqs_by_id(rig: Rig) -> dict[str, int]:
    rows = await rig.store.read(lambda c: fetchall(c, "SELECT id, seq FROM job", []))
    return {job_id: seq for job_id, seq in rows}


async def test_ids_sort_in_submission_order(rig: Rig) -> None:
    """Neighbouring ids keep a batch's inserts at the end of the id indexes (admission.new_job_id)."""
    views, _ = await rig.sched.submit([JobSpec(command=["true"], array="0-2" if i == 5 else None)
                                       for i in range(20)], batch=True)
    later = await rig.submit()
    ids = [str(v.id) for v in views] + [later]
    assert ids == sorted(ids)


async def test_submits_awaiting_their_writes_together_get_their_own_seqs(rig: Rig) -> None:
    await asyncio.gather(*(rig.submit() for _ in range(10)))
    assert len(set((await seqs_by_id(rig)).values())) == 10


async def test_no_two_jobs_share_an_id_even_when_the_random_half_repeats(rig: Rig,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission.secrets, "token_hex", lambda n: "ab" * n)
    await rig.sched.submit([JobSpec(command=["true"]) for _ in range(300)], batch=True)
    assert len(await seqs_by_id(rig)) == 300


def test_an_id_grows_a_digit_past_16_million_jobs_instead_of_wrapping() -> None:
    assert admission.new_job_id(0x1000000)[:7] == "1000000"


async def test_the_next_job_reserves_its_resources_so_small_ones_do_not_starve_a_big_one(rig: Rig) -> None:
    a, b = await rig.submit(), await rig.submit()
    assert await rig.step() == [a, b]  # 2 of 4 CPUs in use
    big = await rig.submit(priority=5, resources={"cpu": 4})
    small = await rig.submit(priority=0)
    assert await rig.step() == []  # 2 CPUs free: the small one could run, but the big one is next
    await rig.end(a)
    assert await rig.step() == []
    await rig.end(b)
    assert await rig.step() == [big]
    await rig.end(big)
    assert await rig.step() == [small]


async def test_the_dispatch_loop_hands_a_job_over_as_soon_as_a_submit_wakes_it(rig: Rig) -> None:
    loop = asyncio.create_task(rig.sched.term.dispatch.loop())
    job = await rig.submit()
    for _ in range(100):  # yields to the loop's task; no time passes
        if rig.backend.batches:
            break
        await asyncio.sleep(0)
    await rig.sched.stop()
    await loop
    assert rig.backend.dispatched_ids() == [job]


async def test_a_waiting_job_keeps_its_spec_as_stored_and_reads_it_back_whole(rig: Rig) -> None:
    """100,000 waiting jobs must fit the daemon's memory: each keeps its compact stored spec, not
    a validated model (2.7 KB in 22 objects), and decodes it whole when dispatched."""
    await rig.submit(resources={"cpu": 4})  # the cluster is full: the next one waits
    job = await rig.submit(name="w", env={"A": "1"}, timeout=30)
    queued = rig.sched.state.queued[job]
    assert not any(isinstance(getattr(queued, f), JobSpec) for f in queued.__slots__)
    assert queued.spec == JobSpec(command=["true"], name="w", env={"A": "1"}, timeout=30)


async def test_a_job_that_no_node_can_ever_hold_is_rejected_at_once(rig: Rig) -> None:
    job = await rig.submit(resources={"cpu": 64})
    assert await rig.reason(job) == "no node can ever hold CPU=64 (largest node has CPU=4)"


async def test_a_new_priority_moves_a_waiting_job_ahead(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 1.0}})).start()
    first, second = await rig.submit(), await rig.submit()
    await rig.sched.set_priority(second, 50)
    assert await drain_one_at_a_time(rig) == [second, first]


async def test_a_cancelled_waiting_job_is_never_dispatched(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 1.0}})).start()
    running, waiting = await rig.submit(), await rig.submit()
    await rig.step()
    await rig.sched.cancel([waiting])
    await rig.end(running)
    assert await rig.step() == []


# -- quotas and fair share -----------------------------------------------------------------
async def test_max_running_holds_a_tenants_next_job_with_the_quota_as_its_reason(rig: Rig) -> None:
    rig.sched.set_quotas({"a": Quotas(max_running=2)})
    ids = [await rig.submit(tenant="a", resources={"cpu": 0.5}) for _ in range(3)]
    assert await rig.step() == ids[:2]
    assert await rig.reason(ids[2]) == "quota: tenant a runs 2 jobs (max-running 2)"
    await rig.end(ids[0])
    assert await rig.step() == ids[2:]


async def test_max_cpu_holds_a_tenants_next_job_with_the_quota_as_its_reason(rig: Rig) -> None:
    rig.sched.set_quotas({"a": Quotas(max_cpu=2)})
    ids = [await rig.submit(tenant="a") for _ in range(3)]
    assert await rig.step() == ids[:2]
    assert await rig.reason(ids[2]) == "quota: tenant a uses 2 of 2 CPUs (max-cpu)"


async def test_a_zero_cpu_job_counts_as_min_cpu_against_max_cpu(rig: Rig) -> None:
    rig.sched.set_quotas({"a": Quotas(max_cpu=1)})
    for _ in range(6):
        await rig.submit(tenant="a", resources={"cpu": 0})
    assert len(await rig.step()) == 4  # 1 CPU / MIN_CPU 0.25


async def test_max_queued_rejects_the_job_past_it_with_the_quota_as_its_reason(rig: Rig) -> None:
    rig.sched.set_quotas({"a": Quotas(max_queued=2)})
    ids = [await rig.submit(tenant="a") for _ in range(3)]
    assert await rig.reason(ids[2]) == "quota: tenant a has 2 queued jobs (max-queued 2)"


async def test_a_tenant_without_max_queued_holds_at_most_its_share_of_max_jobs(tmp_path: Path,
                                                                               store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock()), max_jobs=6).start()
    rig.sched.set_quotas({"a": Quotas(), "b": Quotas(), "c": Quotas()})
    ids = [await rig.submit(tenant="a") for _ in range(3)]
    other = await rig.submit(tenant="b")
    assert [await rig.status(j) for j in [*ids, other]] == [S.PENDING, S.PENDING, S.REJECTED, S.PENDING]
    assert "its share of max_jobs=6" in (await rig.reason(ids[2]) or "")


async def test_a_tenant_at_its_quota_does_not_hold_up_another(rig: Rig) -> None:
    rig.sched.set_quotas({"a": Quotas(max_running=1), "b": Quotas()})
    a1, a2 = await rig.submit(tenant="a"), await rig.submit(tenant="a")
    b1 = await rig.submit(tenant="b")
    assert sorted(await rig.step()) == sorted([a1, b1])
    assert await rig.status(a2) is S.PENDING


async def test_free_slots_go_to_tenants_in_proportion_to_their_weights(rig: Rig) -> None:
    rig.sched.set_quotas({"a": Quotas(weight=1), "b": Quotas(weight=3)})
    for _ in range(4):
        await rig.submit(tenant="a")
    for _ in range(4):
        await rig.submit(tenant="b")
    started = await rig.step()  # 4 CPUs: one for a, three for b
    tenants = [rig.sched.state.dispatched[j].tenant for j in started]
    assert sorted(tenants) == ["a", "b", "b", "b"]


quota = hs.builds(Quotas, max_running=hs.none() | hs.integers(1, 3),
                  max_cpu=hs.none() | hs.sampled_from([1.0, 1.5, 3.0]))


@settings(max_examples=30, deadline=None)
@given(hs.fixed_dictionaries({"a": quota, "b": quota}),
       hs.lists(hs.tuples(hs.sampled_from(["a", "b"]), hs.sampled_from([0.25, 0.5, 1.0, 2.0])), min_size=1,
                max_size=10),
       hs.randoms(use_true_random=False))
def test_any_quotas_and_job_mix_never_run_over_quota_and_run_every_job_once(
        shared: tuple[Path, st.Store], quotas: dict[str, Quotas], jobs: list[tuple[str, float]],
        rnd: random.Random) -> None:
    async def run() -> None:
        rig = await fresh(shared, {"n": {"CPU": 16.0}}).start(load=False)
        rig.sched.set_quotas(quotas)
        need: dict[str, tuple[str, float]] = {}
        for tenant, cpu in jobs:
            job = await rig.submit(tenant=tenant, resources={"cpu": cpu})
            if await rig.status(job) is S.PENDING:  # not refused (more CPUs than its quota ever allows)
                need[job] = (tenant, cpu)
        while await rig.step() or rig.backend.inflight:
            for tenant, q in quotas.items():
                mine = [need[j][1] for j in rig.backend.inflight if need[j][0] == tenant]
                assert q.max_running is None or len(mine) <= q.max_running
                assert q.max_cpu is None or sum(mine) <= q.max_cpu + 1e-9
            await rig.end(rnd.choice(sorted(rig.backend.inflight)))
        assert sorted(rig.backend.dispatched_ids()) == sorted(need)

    asyncio.run(run())


# -- retries with backoff ------------------------------------------------------------------
async def test_a_failed_attempt_waits_for_its_backoff_then_runs_again(rig: Rig) -> None:
    job = await rig.submit(retry_policy={"max_retries": 3, "retry_delay": 10, "retry_exponential_base": 2})
    await rig.step()
    await rig.end(job, 3)
    assert await rig.reason(job) == "attempt 1 failed (exit code 3); retry 1 of 3 in 10s"
    rig.clock.advance(9.9)
    assert await rig.step() == []
    rig.clock.advance(0.1)
    assert await rig.step() == [job]


async def test_retries_exhausted_end_failed_with_the_last_reason(rig: Rig) -> None:
    job = await rig.submit(retry_policy={"max_retries": 1, "retry_delay": 1})
    await rig.step()
    await rig.end(job, 3)
    rig.clock.advance(1)
    await rig.step()
    await rig.end(job, 4)
    view = await rig.view(job)
    assert (view.status, view.reason, view.exit_code, view.attempts_made) == (S.FAILED, "exit code 4", 4, 2)


@settings(max_examples=25, deadline=None)
@given(hs.floats(0.5, 100), hs.sampled_from([1.0, 1.5, 2.0, 3.0]), hs.sampled_from([60.0, 7 * 86400.0]),
       hs.integers(1, 4))
def test_the_nth_retry_waits_delay_times_base_to_the_n_minus_1_capped(shared: tuple[Path, st.Store], delay: float,
                                                                      base: float, cap: float, retries: int) -> None:
    async def run() -> None:
        rig = await fresh(shared, {"n": {"CPU": 1.0}}).start(load=False)
        job = await rig.submit(retry_policy={"max_retries": retries, "retry_delay": delay,
                                             "retry_exponential_base": base, "max_delay": cap})
        await rig.step()
        for n in range(1, retries + 1):
            await rig.end(job, 1)
            due = rig.clock.t + min(delay * base ** (n - 1), cap)
            rig.clock.t = due - 0.01
            assert await rig.step() == []
            rig.clock.t = due
            assert await rig.step() == [job]
        await rig.end(job, 1)
        assert await rig.status(job) is S.FAILED

    asyncio.run(run())


async def test_a_dead_worker_is_a_failed_attempt_retried_with_its_node_named(rig: Rig) -> None:
    job = await rig.submit(retry_policy={"max_retries": 1})
    await rig.step()
    rig.backend.started(job, host="host-7")
    await rig.backend.deliver(rig.sched)
    await rig.end(job, None, "RayTaskError: the worker died")
    assert await rig.reason(job) == ("attempt 1 failed (node host-7 (Ray node ray-node): RayTaskError: the worker "
                                     "died); retry 1 of 1 in 0s")


# -- timeouts ------------------------------------------------------------------------------
async def test_the_timeout_travels_with_the_attempt_spec_first_then_the_default(tmp_path: Path,
                                                                                store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock()), job_timeout=600).start()
    own, default = await rig.submit(timeout=30), await rig.submit()
    await rig.step()
    timeouts = {job["id"]: job["opts"]["timeout"] for job in rig.backend.batches[0]}
    assert timeouts == {own: 30, default: 600}


async def test_a_timed_out_attempt_fails_the_job_with_timeout_as_its_reason(rig: Rig) -> None:
    job = await rig.submit(timeout=30)
    await rig.step()
    rig.backend.started(job)
    rig.backend.timed_out(job)
    await rig.backend.deliver(rig.sched)
    view = await rig.view(job)
    assert (view.status, view.reason, view.exit_code) == (S.FAILED, "timeout", SIGTERM_EXIT)
    assert view.attempts[0].reason == "timeout"


async def test_a_timed_out_attempt_is_retried_by_policy(rig: Rig) -> None:
    job = await rig.submit(timeout=30, retry_policy={"max_retries": 1})
    await rig.step()
    rig.backend.timed_out(job)
    await rig.backend.deliver(rig.sched)
    assert await rig.step() == [job]


# -- dependencies: release, cascades, cancel of a tree -------------------------------------
async def test_a_child_runs_only_after_its_parent_completed(rig: Rig) -> None:
    parent = await rig.submit()
    child = await rig.submit(dependencies=[parent])
    assert await rig.step() == [parent]
    await rig.end(parent)
    assert await rig.step() == [child]


async def test_a_failed_dependency_cancels_every_descendant_naming_it(rig: Rig) -> None:
    a = await rig.submit(name="prep")
    b = await rig.submit(dependencies=[a])
    c = await rig.submit(dependencies=[b])
    await rig.step()
    await rig.end(a, 2)
    assert [await rig.status(j) for j in (b, c)] == [S.CANCELLED, S.CANCELLED]
    assert {await rig.reason(j) for j in (b, c)} == {f"dependency {a} (prep) ended FAILED"}
    assert rig.backend.dispatched_ids() == [a]


async def test_a_dependency_that_failed_before_the_submit_cancels_the_new_job(rig: Rig) -> None:
    a = await rig.submit(name="prep")
    await rig.step()
    await rig.end(a, 2)
    b = await rig.submit(dependencies=[a])
    assert await rig.reason(b) == f"dependency {a} (prep) ended FAILED"


# -- --begin: not before a moment ----------------------------------------------------------
async def test_a_job_does_not_start_before_its_begin_time(rig: Rig) -> None:
    await rig.submit(begin_at=rig.clock.now() + 60)
    assert await rig.step() == []


async def test_a_job_starts_once_its_begin_time_has_come(rig: Rig) -> None:
    job = await rig.submit(begin_at=rig.clock.now() + 60)
    rig.clock.advance(60)
    assert await rig.step() == [job]


async def test_a_job_waiting_for_its_begin_time_says_so(rig: Rig) -> None:
    job = await rig.submit(begin_at=1_700_003_600.0)
    assert await rig.reason(job) == "begins at 2023-11-14T23:13:20Z"


async def test_a_begin_time_in_the_past_is_no_wait(rig: Rig) -> None:
    job = await rig.submit(begin_at=rig.clock.now() - 1)
    assert await rig.step() == [job]


async def test_a_job_freed_by_its_dependency_still_waits_for_its_begin_time(rig: Rig) -> None:
    a = await rig.submit()
    b = await rig.submit(dependencies=[a], begin_at=rig.clock.now() + 60)
    await rig.step()
    await rig.end(a)
    assert await rig.step() == []
    rig.clock.advance(60)
    assert await rig.step() == [b]


async def test_a_restart_keeps_each_begin_time(tmp_path: Path) -> None:
    first = await Rig(tmp_path, open_store(tmp_path), FakeBackend(FakeClock(), {"n": {"CPU": 4.0}})).start()
    job = await first.submit(begin_at=first.clock.now() + 60)
    first.store.close()
    second = await Rig(tmp_path, open_store(tmp_path), first.backend).start()
    try:
        assert await second.step() == []
        second.clock.advance(60)
        assert await second.step() == [job]
    finally:
        second.store.close()


# -- retry --with-dependents -----------------------------------------------------------------
async def failed_chain(rig: Rig) -> tuple[str, str, str]:
    """a -> b -> c, where a failed: b and c were cancelled in cascade."""
    a = await rig.submit(name="prep")
    b = await rig.submit(dependencies=[a])
    c = await rig.submit(dependencies=[b])
    await rig.step()
    await rig.end(a, 1)
    return a, b, c


async def test_retry_with_dependents_revives_what_the_failure_cancelled(rig: Rig) -> None:
    a, b, c = await failed_chain(rig)
    result = await rig.sched.retry([a], with_dependents=True)
    assert [r.id for r in result.affected] == [a, b, c]


async def test_revived_dependents_wait_for_the_retried_job_again(rig: Rig) -> None:
    a, b, c = await failed_chain(rig)
    await rig.sched.retry([a], with_dependents=True)
    assert await rig.step() == [a]
    await rig.end(a)
    assert await rig.step() == [b]


async def test_retry_without_dependents_leaves_them_cancelled(rig: Rig) -> None:
    a, b, c = await failed_chain(rig)
    await rig.sched.retry([a])
    assert await rig.status(b) is S.CANCELLED


async def test_a_dependent_cancelled_by_a_user_is_not_revived(rig: Rig) -> None:
    a = await rig.submit()
    b = await rig.submit(dependencies=[a])
    await rig.sched.cancel([b])
    await rig.step()
    await rig.end(a, 1)
    result = await rig.sched.retry([a], with_dependents=True)
    assert [r.id for r in result.affected] == [a]


# -- update of a waiting job ------------------------------------------------------------------
async def update(rig: Rig, job_id: str, **changes: Any) -> JobView:
    return await rig.sched.update(job_id, JobUpdate(**changes))


async def test_an_update_of_dependencies_makes_the_job_wait_for_the_new_ones(rig: Rig) -> None:
    a, b = await rig.submit(), await rig.submit()
    await rig.step()
    job = await rig.submit(dependencies=[a])
    await update(rig, job, dependencies=[b])
    await rig.end(a)
    assert await rig.step() == []
    await rig.end(b)
    assert await rig.step() == [job]


async def test_an_update_that_drops_every_dependency_lets_the_job_start(rig: Rig) -> None:
    a = await rig.submit(begin_at=rig.clock.now() + 3600)
    job = await rig.submit(dependencies=[a])
    await update(rig, job, dependencies=[])
    assert await rig.step() == [job]


async def test_an_update_that_would_close_a_cycle_is_refused(rig: Rig) -> None:
    a = await rig.submit(hold=True)
    b = await rig.submit(dependencies=[a])
    with pytest.raises(Invalid, match=f"cycle: {b} waits for {a}"):
        await update(rig, a, dependencies=[b])


async def test_an_update_to_an_unknown_dependency_is_refused(rig: Rig) -> None:
    job = await rig.submit(hold=True)
    with pytest.raises(Invalid, match="unknown dependency: nosuchjob"):
        await update(rig, job, dependencies=["nosuchjob"])


async def test_an_update_of_a_running_job_is_refused(rig: Rig) -> None:
    job = await rig.submit()
    await rig.step()
    rig.backend.started(job)
    await rig.backend.deliver(rig.sched)
    with pytest.raises(Conflict, match="only a waiting job can be updated"):
        await update(rig, job, priority=5)


async def test_an_update_to_resources_no_node_holds_is_refused(rig: Rig) -> None:
    job = await rig.submit(hold=True)
    with pytest.raises(Rejected):
        await update(rig, job, resources={"cpu": 64})


async def test_an_update_is_audited_with_what_changed(rig: Rig) -> None:
    job = await rig.submit(hold=True)
    await update(rig, job, priority=5, timeout="1h")
    assert await rig.reason(job) == "updated: priority 0 -> 5, timeout - -> 3600s"


async def test_an_update_of_the_begin_time_to_now_lets_the_job_start(rig: Rig) -> None:
    job = await rig.submit(begin_at=rig.clock.now() + 3600)
    await update(rig, job, begin_at=rig.clock.now())
    assert await rig.step() == [job]


async def test_an_update_keeps_a_restart_s_view_of_the_job(tmp_path: Path) -> None:
    first = await Rig(tmp_path, open_store(tmp_path), FakeBackend(FakeClock(), {"n": {"CPU": 4.0}})).start()
    a, b = await first.submit(hold=True), await first.submit(hold=True)
    job = await first.submit(dependencies=[a])
    await update(first, job, dependencies=[b], priority=7)
    first.store.close()
    second = await Rig(tmp_path, open_store(tmp_path), first.backend).start()
    try:
        assert (await second.view(job)).spec.dependencies == [b]
        await second.sched.release([b])
        assert await second.step() == [b]
        await second.end(b)
        assert await second.step() == [job]
    finally:
        second.store.close()


# -- hold and release -----------------------------------------------------------------------
async def test_a_held_job_does_not_start(rig: Rig) -> None:
    job = await rig.submit()
    await rig.sched.hold([job])
    assert await rig.step() == []


async def test_a_released_job_starts(rig: Rig) -> None:
    job = await rig.submit()
    await rig.sched.hold([job])
    await rig.sched.release([job])
    assert await rig.step() == [job]


async def test_a_job_submitted_held_says_so_and_waits(rig: Rig) -> None:
    job = await rig.submit(hold=True)
    assert (await rig.reason(job), await rig.step()) == ("held by user", [])


async def test_holding_a_running_job_is_an_error_naming_its_status(rig: Rig) -> None:
    job = await rig.submit()
    await rig.step()
    rig.backend.started(job)
    await rig.backend.deliver(rig.sched)
    result = await rig.sched.hold([job])
    assert result.errors[0]["message"] == f"job {job} is RUNNING: only a waiting job can be held"


async def test_a_held_job_freed_by_its_dependency_stays_held(rig: Rig) -> None:
    a = await rig.submit()
    b = await rig.submit(dependencies=[a])
    await rig.sched.hold([b])
    await rig.step()
    await rig.end(a)
    assert await rig.step() == []
    await rig.sched.release([b])
    assert await rig.step() == [b]


async def test_hold_and_release_are_audited(rig: Rig) -> None:
    job = await rig.submit()
    await rig.sched.hold([job])
    await rig.sched.release([job])
    events = await rig.store.read(lambda c: st.job_events(c, job))
    assert [e.reason for e in events][-2:] == ["held by user", "released by user"]


async def test_a_restart_keeps_a_job_held(tmp_path: Path) -> None:
    first = await Rig(tmp_path, open_store(tmp_path), FakeBackend(FakeClock(), {"n": {"CPU": 4.0}})).start()
    job = await first.submit()
    await first.sched.hold([job])
    first.store.close()
    second = await Rig(tmp_path, open_store(tmp_path), first.backend).start()
    try:
        assert await second.step() == []
        await second.sched.release([job])
        assert await second.step() == [job]
    finally:
        second.store.close()


async def test_a_retried_job_is_not_held(rig: Rig) -> None:
    job = await rig.submit(hold=True)
    await rig.sched.cancel([job])
    await rig.sched.retry([job])
    assert (await rig.view(job)).held is False


# -- dependency conditions (Slurm's afterok, afternotok, afterany) --------------------------
async def test_an_after_notok_job_runs_when_its_dependency_fails(rig: Rig) -> None:
    a = await rig.submit(name="train")
    cleanup = await rig.submit(after_notok=[a])
    await rig.step()
    await rig.end(a, 1)
    assert await rig.step() == [cleanup]


async def test_an_after_notok_job_is_cancelled_when_its_dependency_completes(rig: Rig) -> None:
    a = await rig.submit(name="train")
    cleanup = await rig.submit(after_notok=[a])
    await rig.step()
    await rig.end(a, 0)
    assert await rig.reason(cleanup) == f"dependency {a} (train) ended COMPLETED; after-notok waits for it to fail"


@pytest.mark.parametrize("code", [1, 0], ids=["fails", "completes"])
async def test_an_after_any_job_runs_however_its_dependency_ends(rig: Rig, code: int) -> None:
    a = await rig.submit()
    report = await rig.submit(after_any=[a])
    await rig.step()
    await rig.end(a, code)
    assert await rig.step() == [report]


async def test_a_job_cancelled_in_cascade_lets_an_after_notok_dependent_run(rig: Rig) -> None:
    a = await rig.submit(name="prep")
    b = await rig.submit(dependencies=[a])
    on_failure = await rig.submit(after_notok=[b])
    await rig.step()
    await rig.end(a, 2)
    assert await rig.status(b) is S.CANCELLED
    assert await rig.step() == [on_failure]


async def test_a_job_waits_for_every_condition_it_names(rig: Rig) -> None:
    ok, bad = await rig.submit(), await rig.submit()
    last = await rig.submit(dependencies=[ok], after_notok=[bad])
    await rig.step()
    await rig.end(bad, 1)
    assert await rig.step() == []  # `ok` has not ended yet
    await rig.end(ok, 0)
    assert await rig.step() == [last]


async def test_a_dependency_that_failed_before_the_submit_lets_an_after_notok_job_start(rig: Rig) -> None:
    a = await rig.submit()
    await rig.step()
    await rig.end(a, 1)
    cleanup = await rig.submit(after_notok=[a])
    assert await rig.step() == [cleanup]


async def test_a_dependency_that_completed_before_the_submit_cancels_an_after_notok_job(rig: Rig) -> None:
    a = await rig.submit(name="prep")
    await rig.step()
    await rig.end(a, 0)
    cleanup = await rig.submit(after_notok=[a])
    assert await rig.status(cleanup) is S.CANCELLED


async def test_a_batch_names_its_jobs_under_any_condition(rig: Rig) -> None:
    views, _ = await rig.sched.submit([JobSpec(command=["true"], name="train"),
                                       JobSpec(command=["true"], name="report", after_any=["train"])], batch=True)
    train, report = (str(v.id) for v in views)
    assert (await rig.view(report)).spec.after_any == [train]


async def test_a_restart_keeps_each_condition(tmp_path: Path) -> None:
    first = await Rig(tmp_path, open_store(tmp_path), FakeBackend(FakeClock(), {"n": {"CPU": 4.0}})).start()
    a = await first.submit()
    cleanup = await first.submit(after_notok=[a])
    await first.step()
    first.store.close()
    second = await Rig(tmp_path, open_store(tmp_path), first.backend).start()
    try:
        await second.end(a, 1)
        assert await second.step() == [cleanup]
    finally:
        second.store.close()


def test_a_dependency_under_two_conditions_is_refused() -> None:
    with pytest.raises(ValueError, match="under two conditions"):
        JobSpec(command=["true"], dependencies=["a"], after_any=["a"])


async def test_cancelling_a_running_parent_cancels_its_tree_and_stops_the_attempt(rig: Rig) -> None:
    a = await rig.submit(name="root")
    b = await rig.submit(dependencies=[a])
    c = await rig.submit(dependencies=[b])
    await rig.step()
    rig.backend.started(a)
    await rig.backend.deliver(rig.sched)
    result = await rig.sched.cancel([a])
    assert sorted(r.id for r in result.cascaded) == sorted([b, c])
    assert rig.backend.cancels == [(a, rig.cfg.jobmanager.kill_grace)]
    await rig.backend.deliver(rig.sched)  # the attempt's `ended` (cancelled) changes nothing
    assert [await rig.status(j) for j in (a, b, c)] == [S.CANCELLED] * 3


# -- restart recovery ----------------------------------------------------------------------
async def test_a_new_scheduler_on_the_same_store_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    cluster = FakeBackend(FakeClock(), {"n": {"CPU": 2.0}})
    first = await Rig(tmp_path, open_store(tmp_path), cluster).start()
    ids = [await first.submit(name=f"j{i}") for i in range(5)]
    assert await first.step() == ids[:2]
    cluster.started(ids[0])
    await cluster.deliver(first.sched)
    cluster.ended(ids[1], 0)  # ends while the daemon is down: the actor keeps the event
    first.store.close()
    second = await Rig(tmp_path, open_store(tmp_path), cluster).start()
    try:
        assert await second.status(ids[1]) is S.COMPLETED
        assert await second.step() == [ids[2]]  # j0 still holds one of the two CPUs
        for job in ids[0], ids[2]:
            await second.end(job)
        await drain_one_at_a_time(second)
        assert cluster.dispatched_ids() == ids
        assert [await second.status(j) for j in ids] == [S.COMPLETED] * 5
    finally:
        second.store.close()


async def test_a_new_actor_fails_the_running_attempts_it_lost_and_runs_the_rest_again(tmp_path: Path) -> None:
    first = await Rig(tmp_path, open_store(tmp_path), FakeBackend(FakeClock(), {"n": {"CPU": 2.0}})).start()
    running = await first.submit(retry_policy={"max_retries": 1})
    handed = await first.submit()
    await first.step()
    first.backend.started(running)
    await first.backend.deliver(first.sched)
    first.store.close()
    new_actor = FakeBackend(first.clock, {"n": {"CPU": 2.0}}, epoch="fake-epoch-2")
    second = await Rig(tmp_path, open_store(tmp_path), new_actor).start()
    try:
        assert await second.reason(running) == ("attempt 1 failed (lost: the Ray dispatcher no longer knows this "
                                                "job); retry 1 of 1 in 0s")
        assert sorted(await second.step()) == sorted([running, handed])
    finally:
        second.store.close()


async def test_a_restart_keeps_who_waits_for_whom_and_each_backoff(tmp_path: Path) -> None:
    first = await Rig(tmp_path, open_store(tmp_path), FakeBackend(FakeClock(), {"n": {"CPU": 4.0}})).start()
    blocker = await first.submit()
    child = await first.submit(dependencies=[blocker])
    flaky = await first.submit(retry_policy={"max_retries": 1, "retry_delay": 3})
    await first.step()
    await first.end(flaky, 1)
    first.store.close()
    second = await Rig(tmp_path, open_store(tmp_path), first.backend).start()
    try:
        assert await second.step() == []  # the child waits, the flaky one is in its backoff
        await second.end(blocker)
        assert await second.step() == [child]
        second.clock.advance(3)
        assert await second.step() == [flaky]
    finally:
        second.store.close()


# -- terms of leadership: one Scheduler for the daemon's life ------------------------------
async def test_a_term_that_ends_holds_no_queue(rig: Rig) -> None:
    await rig.submit(dependencies=[await rig.submit()])
    await rig.sched.end_term()
    assert len(rig.sched.state.queued) == 0


async def test_the_next_term_of_the_same_scheduler_picks_the_queue_up_from_the_database(rig: Rig) -> None:
    parent = await rig.submit()
    child = await rig.submit(dependencies=[parent])
    await rig.step()
    await rig.sched.end_term()
    rig.backend.ended(parent, 0)  # while another daemon led: the actor keeps the event
    await rig.start()
    assert await rig.step() == [child]


async def test_the_metrics_counters_count_since_the_process_started_across_terms(rig: Rig) -> None:
    await rig.submit()
    await rig.sched.end_term()
    await rig.start()
    await rig.submit()
    assert rig.sched.counters.submitted == 2


# -- the dispatcher out of reach ------------------------------------------------------------
async def polls_until_lost(rig: Rig) -> int:
    """Run the poll loop against an actor that cannot be reached: the polls made before the
    scheduler gives the connection up (and asks for a new one)."""
    lost: list[bool] = []

    async def on_lost() -> None:
        lost.append(True)

    rig.sched.on_ray_lost = on_lost
    rig.backend.poll_error = ConnectionError("the actor is out of reach")
    reconcile = rig.sched.term.reconcile
    reconcile.retry_pause = 0  # type: ignore[misc]  # seconds in the daemon
    rig.backend.polls = 0
    await reconcile.poll_loop()
    await asyncio.sleep(0)  # the lost callback is a task of its own
    assert lost, "the connection was never given up"
    return rig.backend.polls


async def test_an_unreachable_dispatcher_is_given_up_after_a_few_failed_polls(rig: Rig) -> None:
    assert await polls_until_lost(rig) == LOST_AFTER


async def test_a_head_that_refuses_connections_is_given_up_sooner(rig: Rig) -> None:
    rig.backend.refusing = True
    assert await polls_until_lost(rig) == LOST_AFTER_REFUSED


async def test_a_lost_dispatcher_reads_as_disconnected_in_health(rig: Rig) -> None:
    await polls_until_lost(rig)
    assert rig.backend.connected is False


# -- backfill (EASY, as Slurm's sched/backfill) -------------------------------------------------
async def reserved_big_job(rig: Rig) -> tuple[str, str]:
    """2 of 4 CPUs run a job limited to 100 s; a 4-CPU job is next: it is reserved the node at +100 s."""
    running = await rig.submit(resources={"cpu": 2}, timeout=100)
    assert await rig.step() == [running]
    await rig.run(running)
    big = await rig.submit(priority=5, resources={"cpu": 4})
    assert await rig.step() == []
    return running, big


async def test_a_short_job_starts_around_the_reserved_one_when_its_time_limit_ends_before_the_reservation(
        rig: Rig) -> None:
    await reserved_big_job(rig)
    short = await rig.submit(resources={"cpu": 1}, timeout=60)
    assert await rig.step() == [short]


async def test_a_job_whose_time_limit_outlasts_the_reservation_waits(rig: Rig) -> None:
    await reserved_big_job(rig)
    long = await rig.submit(resources={"cpu": 1}, timeout=500)
    assert await rig.step() == []
    assert (await rig.pending(long)).code is PendingCode.RESERVATION


async def test_a_job_without_a_time_limit_never_backfills(rig: Rig) -> None:
    await reserved_big_job(rig)
    await rig.submit(resources={"cpu": 1})
    assert await rig.step() == []


async def test_a_long_job_may_use_what_the_reserved_job_leaves_over_at_its_start(rig: Rig) -> None:
    running = await rig.submit(resources={"cpu": 2}, timeout=100)
    await rig.step()
    await rig.run(running)
    await rig.submit(priority=5, resources={"cpu": 3})  # reserved at +100 s; 1 CPU to spare then
    first = await rig.submit(resources={"cpu": 1}, timeout=1000)
    second = await rig.submit(resources={"cpu": 1}, timeout=1000)
    assert await rig.step() == [first]
    assert (await rig.pending(second)).code is PendingCode.RESERVATION


async def test_a_long_job_backfills_on_a_node_other_than_the_reserved_one(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"a": {"CPU": 4.0}, "b": {"CPU": 2.0}})).start()
    running = await rig.submit(resources={"cpu": 4}, timeout=100)
    await rig.step()
    await rig.run(running)
    await rig.submit(priority=5, resources={"cpu": 4})  # only node a can hold it: reserved there
    long = await rig.submit(resources={"cpu": 2}, timeout=10_000)
    assert await rig.step() == [long]


async def test_backfill_off_keeps_strict_order(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 4.0}}), backfill=False).start()
    await reserved_big_job(rig)
    await rig.submit(resources={"cpu": 1}, timeout=60)
    assert await rig.step() == []


async def test_the_reserved_job_starts_when_its_reservation_comes(rig: Rig) -> None:
    running, big = await reserved_big_job(rig)
    short = await rig.submit(resources={"cpu": 1}, timeout=60)
    await rig.step()
    await rig.run(short)
    rig.clock.advance(60)
    await rig.end(short)
    rig.clock.advance(40)
    await rig.end(running)
    assert await rig.step() == [big]


@settings(max_examples=40, deadline=None)
@given(hs.lists(hs.tuples(hs.integers(1, 4), hs.integers(1, 6), hs.integers(0, 2)), min_size=2, max_size=9))
def test_backfill_never_delays_a_reserved_job_past_its_reservation(shared: tuple[Path, st.Store],
                                                                   jobs: list[tuple[int, int, int]]) -> None:
    """Jobs (cpu, time limit in 10 s, priority) on one 4-CPU node, each running its whole limit:
    every job once reserved starts no later than its first reservation said (EASY's promise)."""
    async def run() -> None:
        rig = await fresh(shared, {"n": {"CPU": 4.0}}).start(load=False)
        limit = {await rig.submit(resources={"cpu": cpu}, timeout=10 * t, priority=p): 10 * t for cpu, t, p in jobs}
        promised: dict[str, float] = {}
        ends: list[tuple[float, str]] = []
        while limit:
            for job_id in await rig.step():
                await rig.run(job_id)
                assert rig.clock.now() <= promised.get(job_id, rig.clock.now()) + 1e-6, (job_id, promised)
                ends.append((rig.clock.now() + limit.pop(job_id), job_id))
            r = rig.sched.state.reservation
            if r is not None:
                promised.setdefault(r.job_id, r.at)
            if not ends:
                break
            ends.sort()
            t, job_id = ends.pop(0)
            rig.clock.t = t
            await rig.end(job_id)
        assert not limit

    asyncio.run(run())


# -- why pending: reason codes, place in line, estimated start (as squeue --start) ------------------
async def test_a_held_job_is_pending_for_held(rig: Rig) -> None:
    job = await rig.submit(hold=True)
    assert (await rig.pending(job)).code is PendingCode.HELD


async def test_a_job_waiting_for_another_is_pending_for_dependency(rig: Rig) -> None:
    a = await rig.submit()
    b = await rig.submit(dependencies=[a])
    assert (await rig.pending(b)).text == f"waits for {a}"


async def test_a_job_before_its_begin_time_is_pending_for_begin_time_and_starts_then(rig: Rig) -> None:
    job = await rig.submit(begin_at=rig.clock.now() + 60)
    why = await rig.pending(job)
    assert (why.code, why.estimated_start.timestamp() if why.estimated_start else None) == (
        PendingCode.BEGIN_TIME, rig.clock.now() + 60)


async def test_a_job_held_by_its_tenants_quota_says_which(rig: Rig) -> None:
    rig.sched.set_quotas({"a": Quotas(max_running=1)})
    await rig.submit(tenant="a", resources={"cpu": 1})
    second = await rig.submit(tenant="a", resources={"cpu": 1})
    await rig.step()
    assert (await rig.pending(second)).code is PendingCode.QUOTA_MAX_RUNNING


async def test_the_reserved_job_is_pending_for_resources_with_what_it_needs_and_what_is_free(rig: Rig) -> None:
    _, big = await reserved_big_job(rig)
    assert (await rig.pending(big)).text == "needs CPU=4, largest free CPU=2; reserved from 2023-11-14T22:15:00Z"


async def test_the_next_job_starts_when_the_running_jobs_time_limits_say(rig: Rig) -> None:
    _, big = await reserved_big_job(rig)
    start = (await rig.pending(big)).estimated_start
    assert start is not None and start.timestamp() == rig.clock.now() + 100


async def test_each_job_in_line_is_estimated_after_the_ones_ahead_of_it(rig: Rig) -> None:
    _, big = await reserved_big_job(rig)
    after = await rig.submit(resources={"cpu": 4}, timeout=30)
    start = (await rig.pending(after)).estimated_start
    assert start is not None and start.timestamp() == rig.clock.now() + 100 + 3600  # big has the default limit


async def test_a_job_behind_others_is_pending_for_priority_with_its_place_in_line(rig: Rig) -> None:
    await reserved_big_job(rig)
    after = await rig.submit(resources={"cpu": 4})
    why = await rig.pending(after)
    assert (why.code, why.position, why.of) == (PendingCode.PRIORITY, 2, 2)


async def test_a_job_only_a_draining_node_could_hold_is_pending_for_node_draining(tmp_path: Path,
                                                                                  store: st.Store) -> None:
    cluster = FakeBackend(FakeClock(), {"big": {"CPU": 8.0}, "small": {"CPU": 2.0}})
    rig = await Rig(tmp_path, store, cluster).start()
    cluster.draining.add("big")
    job = await rig.submit(resources={"cpu": 8})
    assert (await rig.pending(job)).code is PendingCode.NODE_DRAINING


async def test_a_dispatched_job_not_yet_running_is_pending_for_starting(rig: Rig) -> None:
    job = await rig.submit()
    await rig.step()
    assert (await rig.pending(job)).code is PendingCode.STARTING


async def test_explaining_writes_nothing(rig: Rig) -> None:
    _, big = await reserved_big_job(rig)
    before = len(await rig.store.read(lambda c: st.job_events(c, big)))
    await rig.pending(big)
    assert len(await rig.store.read(lambda c: st.job_events(c, big))) == before


# -- --kill-on-invalid-dep no: kept waiting when a dependency can never be satisfied -------------
async def kept_after_failure(rig: Rig) -> tuple[str, str]:
    a = await rig.submit()
    b = await rig.submit(dependencies=[a], kill_on_invalid_dep=False)
    await rig.step()
    await rig.end(a, 1)
    return a, b


async def test_a_job_kept_on_an_unmet_dependency_stays_pending(rig: Rig) -> None:
    _, b = await kept_after_failure(rig)
    assert await rig.status(b) is S.PENDING


async def test_a_job_kept_on_an_unmet_dependency_says_which_and_why(rig: Rig) -> None:
    a, b = await kept_after_failure(rig)
    why = await rig.pending(b)
    assert (why.code, why.text) == (PendingCode.DEPENDENCY_NEVER_SATISFIED, f"dependency {a} (true) ended FAILED")


async def test_a_job_kept_on_an_unmet_dependency_is_audited(rig: Rig) -> None:
    _, b = await kept_after_failure(rig)
    assert (await rig.reason(b) or "").endswith("kept waiting (--kill-on-invalid-dep no)")


async def test_a_job_kept_on_an_unmet_dependency_never_starts(rig: Rig) -> None:
    _, b = await kept_after_failure(rig)
    await rig.sched.hold([b])
    await rig.sched.release([b])
    assert await rig.step() == []


async def test_a_kept_job_does_not_cancel_its_own_dependents(rig: Rig) -> None:
    a = await rig.submit()
    b = await rig.submit(dependencies=[a], kill_on_invalid_dep=False)
    c = await rig.submit(dependencies=[b])
    await rig.step()
    await rig.end(a, 1)
    assert await rig.status(c) is S.PENDING


async def test_a_kept_job_waits_for_its_dependency_again_once_that_is_retried(rig: Rig) -> None:
    a, b = await kept_after_failure(rig)
    await rig.sched.retry([a])
    assert await rig.step() == [a]
    await rig.end(a)
    assert await rig.step() == [b]


async def test_a_kept_job_runs_once_its_dependencies_are_updated(rig: Rig) -> None:
    _, b = await kept_after_failure(rig)
    await rig.sched.update(b, JobUpdate(dependencies=[]))
    assert await rig.step() == [b]


async def test_a_kept_job_is_kept_again_after_a_restart(tmp_path: Path) -> None:
    first = await Rig(tmp_path, open_store(tmp_path), FakeBackend(FakeClock(), {"n": {"CPU": 4.0}})).start()
    _, b = await kept_after_failure(first)
    first.store.close()
    second = await Rig(tmp_path, open_store(tmp_path), first.backend).start()
    try:
        assert ((await second.pending(b)).code, await second.step()) == (PendingCode.DEPENDENCY_NEVER_SATISFIED, [])
    finally:
        second.store.close()


async def test_a_job_submitted_after_its_dependency_failed_is_kept_when_asked(rig: Rig) -> None:
    a = await rig.submit()
    await rig.step()
    await rig.end(a, 1)
    b = await rig.submit(dependencies=[a], kill_on_invalid_dep=False)
    assert await rig.status(b) is S.PENDING


# -- job arrays: made a window at a time, throttled, one job for every action -----------------------
async def task_rows(rig: Rig, array: str) -> dict[str, str]:
    """The array's task rows (id -> status), as the store holds them."""
    tasks = await rig.store.read(lambda c: job_arrays.array_tasks(c, [array]))
    return dict(tasks.get(array, []))


async def run_all(rig: Rig, code: Any = 0) -> list[str]:
    """Dispatch and end (with `code`, or code(job_id)) until nothing is left: the ids handed to Ray."""
    order: list[str] = []
    while ids := await rig.step():
        order += ids
        for job_id in ids:
            await rig.end(job_id, code(job_id) if callable(code) else code)
    return order


async def test_an_array_is_one_row_until_its_tasks_turn_comes(tmp_path: Path, store: st.Store, cluster: FakeBackend
                                                              ) -> None:
    rig = await Rig(tmp_path, store, cluster, array_window=4).start()
    array = await rig.submit(array={"indices": "0-99999"})
    assert await task_rows(rig, array) == {}


async def test_an_array_makes_a_window_of_tasks_at_a_time(tmp_path: Path, store: st.Store, cluster: FakeBackend
                                                          ) -> None:
    rig = await Rig(tmp_path, store, cluster, array_window=3).start()
    array = await rig.submit(array={"indices": "0-99999"})
    assert await rig.step() == [f"{array}_0", f"{array}_1", f"{array}_2"]


async def test_a_throttled_array_runs_at_most_n_tasks_at_once(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-9", "throttle": 2})
    first = await rig.step()
    await rig.end(first[0])
    assert (first, await rig.step()) == ([f"{array}_0", f"{array}_1"], [f"{array}_2"])


async def path(rig: Rig, job_id: str) -> list[tuple[Any, Any]]:
    """The job's audit trail, as (from, to) pairs."""
    return [(e.from_status, e.to_status) for e in await rig.store.read(lambda c: st.job_events(c, job_id))]


async def test_a_job_admitted_at_its_submit_is_born_pending_with_one_event(rig: Rig) -> None:
    job = await rig.submit()
    assert await path(rig, job) == [(None, S.PENDING)]


async def test_a_job_refused_at_its_submit_is_born_rejected_with_one_event(rig: Rig) -> None:
    job = await rig.submit(resources={"cpu": 64})  # no node could ever hold it
    assert await path(rig, job) == [(None, S.REJECTED)]


async def test_a_job_submitted_before_ray_is_there_is_born_submitted_then_admitted(
        tmp_path: Path, store: st.Store, cluster: FakeBackend) -> None:
    rig = Rig(tmp_path, store, cluster)
    await rig.sched.begin_term()  # elected, Ray not connected yet
    job = await rig.submit()
    before = await path(rig, job)
    await rig.sched.recover()
    assert (before, await path(rig, job)) == ([(None, S.SUBMITTED)], [(None, S.SUBMITTED), (S.SUBMITTED, S.PENDING)])


async def test_an_arrays_task_is_born_pending_with_one_event(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-1"})
    await rig.step()  # the tasks are made as their turn comes
    assert await path(rig, f"{array}_0") == [(None, S.PENDING)]


async def test_each_task_gets_its_index_in_its_argv_and_environment(rig: Rig) -> None:
    views, _ = await rig.sched.submit([JobSpec(command=["echo", "seed={index}"], array={"indices": "5-9:2"})])
    array = views[0].id
    sent = {item["id"]: item["spec"] for item in (await rig.sched.term.dispatch.once())}
    task = sent[f"{array}_7"]
    assert (task["command"], task["env"]["SAGE_OPS_ARRAY_INDEX"], task["env"]["SAGE_OPS_ARRAY_ID"]) == (
        ["echo", "seed=7"], "7", array)


async def test_an_array_completes_when_every_task_has(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-5"})
    await run_all(rig)
    assert await rig.status(array) is S.COMPLETED


async def test_an_array_with_a_failed_task_fails_once_all_have_ended(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-5"})
    ran = await run_all(rig, lambda job_id: 1 if job_id.endswith("_3") else 0)
    assert (len(ran), await rig.status(array)) == (6, S.FAILED)


async def test_a_job_after_an_array_starts_after_all_of_its_tasks(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-5"})
    after = await rig.submit(dependencies=[array])
    assert (await run_all(rig))[-1] == after


async def test_a_job_submitted_after_an_array_runs_after_its_tasks(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 1.0}}), array_window=2).start()
    array = await rig.submit(array={"indices": "0-3"})
    late = await rig.submit()
    assert await run_all(rig) == [f"{array}_{i}" for i in range(4)] + [late]


async def test_cancelling_an_array_cancels_its_tasks_and_makes_no_more(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-99"})
    await rig.step()
    await rig.sched.cancel([array])
    tasks = set((await task_rows(rig, array)).values())
    assert (tasks, await rig.step(), await rig.status(array)) == ({"CANCELLED"}, [], S.CANCELLED)


async def test_a_held_array_makes_no_task_until_released(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-3"}, hold=True)
    assert await rig.step() == []
    await rig.sched.release([array])
    assert len(await rig.step()) == 4


async def test_holding_a_running_array_holds_its_waiting_tasks(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 1.0}}), array_window=3).start()
    array = await rig.submit(array={"indices": "0-9"})
    [first] = await rig.step()
    await rig.run(first)
    await rig.sched.hold([array])
    await rig.end(first)
    assert await rig.step() == []


async def test_retry_failed_runs_only_the_tasks_that_did_not_complete(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-5"})
    await run_all(rig, lambda job_id: 1 if job_id.endswith(("_1", "_4")) else 0)
    await rig.sched.retry([array], failed=True)
    assert (await run_all(rig), await rig.status(array)) == ([f"{array}_1", f"{array}_4"], S.COMPLETED)


async def test_retry_of_an_array_runs_every_task_again(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-2"})
    await run_all(rig)
    await rig.sched.retry([array])
    assert sorted(await run_all(rig)) == [f"{array}_{i}" for i in range(3)]


async def test_a_new_throttle_takes_effect_while_the_array_runs(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-9", "throttle": 1})
    [first] = await rig.step()
    await rig.run(first)
    await rig.sched.update(array, JobUpdate(throttle=3))
    assert len(await rig.step()) == 2


async def test_an_array_goes_on_after_a_restart_where_it_was(tmp_path: Path) -> None:
    first = await Rig(tmp_path, open_store(tmp_path), FakeBackend(FakeClock(), {"n": {"CPU": 1.0}}),
                      array_window=2).start()
    array = await first.submit(array={"indices": "0-4"})
    for job_id in await first.step():
        await first.end(job_id)
    first.store.close()
    second = await Rig(tmp_path, open_store(tmp_path), first.backend, array_window=2).start()
    try:
        ran = await run_all(second)
        assert (ran, await second.status(array)) == ([f"{array}_{i}" for i in range(1, 5)], S.COMPLETED)
    finally:
        second.store.close()


async def test_an_array_at_its_throttle_is_pending_for_array_throttle(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 1.0}})).start()
    blocker = await rig.submit()
    await rig.step()
    await rig.run(blocker)
    array = await rig.submit(array={"indices": "0-9", "throttle": 1})
    await rig.step()
    assert (await rig.pending(array)).code is PendingCode.ARRAY_THROTTLE


async def test_a_task_id_in_a_request_is_refused(rig: Rig) -> None:
    with pytest.raises(Invalid, match="array_task is set by the daemon"):
        await rig.submit(array_task={"array_id": "x", "index": 1})


@settings(max_examples=25, deadline=None)
@given(hs.lists(hs.integers(0, 30), min_size=1, max_size=12, unique=True), hs.integers(1, 4) | hs.none(),
       hs.sets(hs.integers(0, 30)), hs.integers(1, 5))
def test_arrays_against_a_reference_model(shared: tuple[Path, st.Store], indices: list[int], throttle: int | None,
                                          failing: set[int], window: int) -> None:
    """Any index list, throttle, window and failures: each index runs exactly once, never more
    tasks at once than the throttle, and the array ends as its tasks say (Slurm's rules)."""
    async def run() -> None:
        rig = await fresh(shared, {"n": {"CPU": 3.0}}, array_window=window).start(load=False)
        array = await rig.submit(array={"indices": ",".join(map(str, indices)), "throttle": throttle},
                                 resources={"cpu": 1})
        ran: list[int] = []
        while batch := await rig.step():
            running = rig.sched.state.dispatched
            assert len(running) <= (throttle or 3), (len(running), throttle)
            for job_id in batch:
                ran.append(int(job_id.rsplit("_", 1)[1]))
                await rig.end(job_id, 1 if ran[-1] in failing else 0)
        expected = S.FAILED if failing & set(indices) else S.COMPLETED
        assert (sorted(ran), await rig.status(array)) == (sorted(indices), expected)

    asyncio.run(run())


async def test_after_corr_starts_each_task_after_the_same_index_of_the_other_array(rig: Rig) -> None:
    first = await rig.submit(array={"indices": "0-2"})
    second = await rig.submit(array={"indices": "0-2"}, after_corr=[first])
    ran = await run_all(rig)
    assert all(ran.index(f"{first}_{i}") < ran.index(f"{second}_{i}") for i in range(3))


async def test_after_corr_cancels_only_the_task_whose_counterpart_failed(rig: Rig) -> None:
    first = await rig.submit(array={"indices": "0-2"})
    second = await rig.submit(array={"indices": "0-2"}, after_corr=[first])
    await run_all(rig, lambda job_id: 1 if job_id == f"{first}_1" else 0)
    tasks = await task_rows(rig, second)
    assert tasks == {f"{second}_0": "COMPLETED", f"{second}_1": "CANCELLED", f"{second}_2": "COMPLETED"}


async def test_after_corr_waits_for_the_other_array_to_make_its_task(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 4.0}}), array_window=1).start()
    first = await rig.submit(array={"indices": "0-3"})
    second = await rig.submit(array={"indices": "0-3"}, after_corr=[first])
    await rig.step()
    assert set(await task_rows(rig, second)) <= {f"{second}_0"}


async def test_after_corr_on_something_not_an_array_is_refused(rig: Rig) -> None:
    plain = await rig.submit()
    with pytest.raises(Invalid, match=f"after_corr {plain}: no such array"):
        await rig.submit(array={"indices": "0-2"}, after_corr=[plain])


# -- preemption: a higher-priority job stops preemptible ones, which are warned and requeued ------------
async def running_low(rig: Rig, **spec: Any) -> str:
    low = await rig.submit(resources={"cpu": 4}, preemptible=True, **spec)
    assert await rig.step() == [low]
    await rig.run(low)
    return low


async def test_a_higher_priority_job_preempts_a_preemptible_one_it_needs_the_room_of(rig: Rig) -> None:
    low = await running_low(rig)
    await rig.submit(priority=5, resources={"cpu": 4})
    await rig.step()
    await asyncio.gather(*rig.sched.state.background)
    assert rig.backend.preempted == [low]


async def test_a_preempted_job_is_requeued_not_failed(rig: Rig) -> None:
    low = await running_low(rig)
    await rig.submit(priority=5, resources={"cpu": 4})
    await rig.step()
    await asyncio.gather(*rig.sched.state.background)
    await rig.end(low, 143)
    assert await rig.status(low) is S.PENDING


async def test_the_preempting_job_starts_once_its_victim_has_ended_and_the_victim_runs_again_after(rig: Rig) -> None:
    low = await running_low(rig)
    high = await rig.submit(priority=5, resources={"cpu": 4})
    await rig.step()
    await asyncio.gather(*rig.sched.state.background)
    await rig.end(low, 143)
    assert await rig.step() == [high]
    await rig.end(high)
    assert await rig.step() == [low]


async def test_a_preemption_does_not_use_up_the_victims_retries(rig: Rig) -> None:
    low = await running_low(rig, retry_policy={"max_retries": 0})
    await rig.submit(priority=5, resources={"cpu": 4})
    await rig.step()
    await asyncio.gather(*rig.sched.state.background)
    await rig.end(low, 143)
    await rig.step()
    [high] = rig.backend.batches[-1]
    await rig.end(high["id"])
    await rig.step()
    await rig.end(low, 1)  # its one run fails: FAILED, not retried (the preempted attempt did not count)
    assert (await rig.status(low), (await rig.view(low)).attempts_made) == (S.FAILED, 2)


async def test_a_preemption_is_in_the_victims_history_with_its_warning(rig: Rig) -> None:
    low = await running_low(rig, signal="USR1@60")
    high = await rig.submit(priority=5, resources={"cpu": 4})
    await rig.step()
    await asyncio.gather(*rig.sched.state.background)
    await rig.end(low, 0)
    reasons = [e.reason for e in await rig.store.read(lambda c: st.job_events(c, low))]
    assert [f"preempting for {high}: SIGUSR1, 60s to finish", f"preempted by {high}; requeued"] == reasons[-2:]


async def test_a_job_not_marked_preemptible_is_never_preempted(rig: Rig) -> None:
    job = await rig.submit(resources={"cpu": 4})
    await rig.step()
    await rig.run(job)
    await rig.submit(priority=5, resources={"cpu": 4})
    await rig.step()
    assert rig.backend.preempted == []


async def test_a_job_of_equal_priority_never_preempts(rig: Rig) -> None:
    await running_low(rig)
    await rig.submit(resources={"cpu": 4})
    await rig.step()
    assert rig.backend.preempted == []


async def test_preemptions_are_limited_per_minute(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"a": {"CPU": 4.0}, "b": {"CPU": 4.0}}),
                    preempt_per_minute=1).start()
    lows = [await rig.submit(resources={"cpu": 4}, preemptible=True) for _ in range(2)]
    await rig.step()
    for low in lows:
        await rig.run(low)
    await rig.submit(priority=5, resources={"cpu": 4})
    await rig.submit(priority=5, resources={"cpu": 4})
    await rig.step()
    await asyncio.gather(*rig.sched.state.background)
    await rig.end(rig.backend.preempted[0], 143)
    await rig.step()
    await asyncio.gather(*rig.sched.state.background)
    first_minute = list(rig.backend.preempted)
    rig.clock.advance(61)
    await rig.step()
    await asyncio.gather(*rig.sched.state.background)
    assert (len(first_minute), len(rig.backend.preempted)) == (1, 2)


async def test_the_warning_signal_goes_to_the_runner_with_the_attempt(rig: Rig) -> None:
    await rig.submit(signal="USR1@90")
    [item] = await rig.sched.term.dispatch.once()
    assert (item["opts"]["warn_signal"], item["opts"]["warn_seconds"]) == ("USR1", 90.0)


async def test_an_array_makes_no_task_before_its_begin_time(rig: Rig) -> None:
    array = await rig.submit(array={"indices": "0-1"}, begin_at=rig.clock.now() + 60)
    before = await rig.step()
    rig.clock.advance(60)
    assert (before, await rig.step()) == ([], [f"{array}_0", f"{array}_1"])


async def test_a_failed_task_retried_while_its_array_runs_is_waited_for(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 1.0}}), array_window=1).start()
    array = await rig.submit(array={"indices": "0-1"})
    [first] = await rig.step()
    await rig.end(first, 1)
    await rig.sched.retry([first])
    ran = await run_all(rig)
    assert (sorted(ran), await rig.status(array)) == (sorted([first, f"{array}_1"]), S.COMPLETED)


async def test_a_job_its_runner_says_was_preempted_is_requeued_after_a_daemon_restart(tmp_path: Path) -> None:
    first = await Rig(tmp_path, open_store(tmp_path), FakeBackend(FakeClock(), {"n": {"CPU": 4.0}})).start()
    low = await running_low(first)
    first.store.close()
    second = await Rig(tmp_path, open_store(tmp_path), first.backend).start()  # it no longer knows it asked
    try:
        second.backend.ended(low, 143, "preempted", preempted=True)
        await second.backend.deliver(second.sched)
        assert await second.status(low) is S.PENDING
    finally:
        second.store.close()


async def test_a_tenant_below_its_fair_share_preempts_one_above_its_own(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 4.0}})).start()
    rig.sched.set_quotas({"greedy": Quotas(), "starved": Quotas()})
    hogs = [await rig.submit(tenant="greedy", resources={"cpu": 1}, preemptible=True) for _ in range(4)]
    await rig.step()
    for hog in hogs:
        await rig.run(hog)
    await rig.submit(tenant="starved", resources={"cpu": 1})  # same priority: its tenant's share is 2 CPUs
    await rig.step()
    await asyncio.gather(*rig.sched.state.background)
    assert len(rig.backend.preempted) == 1


async def test_a_tenant_at_its_fair_share_does_not_preempt_for_more(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 4.0}})).start()
    rig.sched.set_quotas({"a": Quotas(), "b": Quotas()})
    jobs = [await rig.submit(tenant=t, resources={"cpu": 1}, preemptible=True) for t in ("a", "a", "b", "b")]
    await rig.step()
    for job in jobs:
        await rig.run(job)
    await rig.submit(tenant="b", resources={"cpu": 1})  # b runs its 2 of 4 CPUs already
    await rig.step()
    assert rig.backend.preempted == []


# -- elastic pools: what the queue asks of them -------------------------------------------------------
GPU_POOL = [{"name": "gpu", "hosts": ["h1", "h2"], "resources": {"GPU": 1}}]


async def test_a_job_only_a_pool_could_hold_is_admitted_to_wait_for_it(tmp_path: Path, store: st.Store,
                                                                      cluster: FakeBackend) -> None:
    rig = await Rig(tmp_path, store, cluster, pools=GPU_POOL).start()
    job = await rig.submit(resources={"gpu": 1})
    assert await rig.status(job) is S.PENDING


async def test_a_job_no_pool_could_hold_is_still_rejected(tmp_path: Path, store: st.Store,
                                                          cluster: FakeBackend) -> None:
    rig = await Rig(tmp_path, store, cluster, pools=GPU_POOL).start()
    job = await rig.submit(resources={"gpu": 2})
    assert await rig.status(job) is S.REJECTED


async def test_the_demand_is_what_waiting_jobs_ask_that_no_node_has_free(tmp_path: Path, store: st.Store,
                                                                         cluster: FakeBackend) -> None:
    rig = await Rig(tmp_path, store, cluster, pools=GPU_POOL).start()
    await rig.submit(resources={"gpu": 1})
    await rig.submit(resources={"cpu": 1})  # fits the node that is up: no demand
    await rig.step()
    assert rig.sched.demand() == [{"CPU": 1.0, "GPU": 1.0}]


async def test_a_held_job_is_no_demand(tmp_path: Path, store: st.Store, cluster: FakeBackend) -> None:
    rig = await Rig(tmp_path, store, cluster, pools=GPU_POOL).start()
    await rig.submit(resources={"gpu": 1}, hold=True)
    await rig.step()
    assert rig.sched.demand() == []


async def test_a_job_placed_for_a_node_that_died_before_it_started_is_demand(tmp_path: Path,
                                                                             store: st.Store) -> None:
    """Ray learns a node is dead seconds after its jobs fail: a retry may be placed for it meanwhile,
    and then waits in Ray's queue for room elsewhere, which only a pool may make."""
    cluster = FakeBackend(FakeClock(), {"cpu-node": {"CPU": 4.0}, "gpu-node": {"CPU": 4.0, "GPU": 1.0}})
    rig = await Rig(tmp_path, store, cluster, pools=GPU_POOL).start()
    await rig.submit(resources={"gpu": 1})
    await rig.step()  # handed to Ray for gpu-node, not started yet
    del cluster.nodes["gpu-node"]
    assert rig.sched.demand() == [{"CPU": 1.0, "GPU": 1.0}]


async def test_a_job_placed_for_a_live_node_is_no_demand(tmp_path: Path, store: st.Store) -> None:
    cluster = FakeBackend(FakeClock(), {"cpu-node": {"CPU": 4.0}, "gpu-node": {"CPU": 4.0, "GPU": 1.0}})
    rig = await Rig(tmp_path, store, cluster, pools=GPU_POOL).start()
    await rig.submit(resources={"gpu": 1})
    await rig.step()
    assert rig.sched.demand() == []


# -- prefetch (short jobs queued in Ray ahead of room) stays out of reservations ---------------------------
async def test_a_short_one_cpu_job_is_prefetched_when_recent_jobs_ran_short(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 1.0}}), prefetch=2).start()
    rig.sched.state.capacity.recent_runtime = 0.01
    await rig.submit()
    second = await rig.submit()
    assert second in await rig.step()  # the node is full: it waits in Ray's queue


async def test_a_job_bigger_than_one_cpu_is_never_prefetched_but_reserved(tmp_path: Path, store: st.Store) -> None:
    rig = await Rig(tmp_path, store, FakeBackend(FakeClock(), {"n": {"CPU": 4.0}}), prefetch=2).start()
    rig.sched.state.capacity.recent_runtime = 0.01
    await rig.submit()
    big = await rig.submit(resources={"cpu": 4})
    await rig.step()
    assert (await rig.pending(big)).code is PendingCode.RESOURCES


async def test_a_job_waiting_for_a_pools_node_says_which_pool_adds_it(tmp_path: Path, store: st.Store,
                                                                      cluster: FakeBackend) -> None:
    rig = await Rig(tmp_path, store, cluster, pools=GPU_POOL).start()
    job = await rig.submit(resources={"gpu": 1})
    await rig.step()
    why = await rig.pending(job)
    assert (why.code, why.text) == (PendingCode.RESOURCES,
                                    "needs CPU=1, GPU=1: no node up holds it; pool gpu adds one (sage-ops pools)")

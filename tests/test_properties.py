"""Property-based tests (hypothesis): the lifecycle table, the DAG rules, and random DAGs run
by the real daemon on real Ray."""

from __future__ import annotations

import random
from typing import Any

import pytest
from conftest import Daemon, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_ops.errors import Conflict
from sage_ops.lifecycle import TERMINAL, TRANSITIONS, JobStatus, is_legal, transition
from sage_ops.schemas import JobSpec, RetryPolicy
from sage_ops.server.scheduling.execution_graph import GraphError, Node, Waiting, critical_path, topological_order
from sage_ops.server.storage.database import IN_MAX, id_chunks

S = JobStatus
statuses = st.sampled_from(list(S))


@given(st.lists(st.tuples(statuses, st.booleans()), max_size=30))
def test_lifecycle_walks_only_legal_edges(moves: list[tuple[JobStatus, bool]]) -> None:
    """From SUBMITTED, any attempted sequence of moves: legal ones are exactly the table's, or an
    explicit retry to PENDING; illegal ones raise and change nothing; terminal states are left only
    by a retry."""
    cur = transition("j", None, S.SUBMITTED).new
    for new, retry in moves:
        if retry:  # a new attempt: a running or finished (not rejected) job back to PENDING
            legal = new is S.PENDING and cur in (S.RUNNING, S.FAILED, S.CANCELLED, S.COMPLETED)
        else:
            legal = new in TRANSITIONS[cur]
        try:
            tr = transition("j", cur, new, retry=retry)
        except Conflict:
            assert not legal
            continue
        assert legal and tr.old is cur
        if cur in TERMINAL:
            assert retry and new is S.PENDING
        cur = tr.new
    assert not is_legal(None, S.RUNNING) and not is_legal(S.REJECTED, S.PENDING, retry=True)


def dags(max_n: int = 40) -> Any:
    """Random DAGs as {job: [deps]} over 0..n-1 (edges only go to lower numbers)."""
    return st.integers(1, max_n).flatmap(lambda n: st.lists(
        st.lists(st.integers(0, n - 1), max_size=3), min_size=n, max_size=n)).map(
        lambda rows: {i: sorted({d for d in row if d < i}) for i, row in enumerate(rows)})


@given(dags(), st.randoms(use_true_random=False))
def test_topological_order_and_cycles(dag: dict[int, list[int]], rnd: random.Random) -> None:
    order = topological_order(dag, len(dag))
    pos = {j: i for i, j in enumerate(order)}
    assert sorted(order) == list(range(len(dag)))
    assert all(pos[d] < pos[j] for j, ds in dag.items() for d in ds)
    chains = [(j, d) for j, ds in dag.items() for d in ds]
    if chains:  # a back edge closes a cycle
        j, d = rnd.choice(chains)
        with pytest.raises(GraphError, match="cycle"):
            topological_order({**dag, d: [*dag[d], j]}, len(dag))


@given(dags(), st.randoms(use_true_random=False))
def test_waiting_frees_each_job_once_after_all_its_dependencies(dag: dict[int, list[int]], rnd: random.Random) -> None:
    w = Waiting()
    ready = [j for j, ds in dag.items() if not w.add(str(j), [str(d) for d in ds])]
    done: set[int] = set()
    freed_count = {j: 0 for j in dag}
    while ready:
        j = int(ready.pop(rnd.randrange(len(ready))))
        assert all(d in done for d in dag[j])  # never runs before its dependencies
        done.add(j)
        freed, doomed = w.ended(str(j), S.COMPLETED)
        assert doomed == []
        for f in freed:
            freed_count[int(f)] += 1
            ready.append(f)
    assert done == set(dag)  # every job ran
    assert all(n == (1 if dag[j] else 0) for j, n in freed_count.items())  # freed once
    assert not w.blockers and not w.children


conditions = st.sampled_from(["ok", "notok", "any"])
ENDS = (S.COMPLETED, S.FAILED)


def reference_fates(dag: dict[int, list[int]], cond: dict[tuple[int, int], str],
                    outcome: dict[int, JobStatus]) -> dict[int, JobStatus]:
    """Slurm's rules, stated plainly: in dependency order, a job whose every dependency ended as
    its condition asks runs (and ends as `outcome` says); any other is cancelled."""
    fate: dict[int, JobStatus] = {}
    for j in sorted(dag):  # edges go to lower numbers: this is a topological order
        ok = all({"ok": fate[d] is S.COMPLETED, "notok": fate[d] is not S.COMPLETED, "any": True}[cond[j, d]]
                 for d in dag[j])
        fate[j] = outcome[j] if ok else S.CANCELLED
    return fate


@given(dags(), st.data(), st.randoms(use_true_random=False))
def test_dependency_conditions_agree_with_the_reference_model(dag: dict[int, list[int]], data: Any,
                                                             rnd: random.Random) -> None:
    """Waiting, driven as the scheduler drives it (a doomed job is cancelled, and its cancel is an
    end too), reaches the fates the reference model gives, in any order of running jobs."""
    cond = {(j, d): data.draw(conditions) for j, ds in dag.items() for d in ds}
    outcome = {j: data.draw(st.sampled_from(ENDS)) for j in dag}
    w = Waiting()
    ready = [j for j, ds in dag.items()
             if not w.add(str(j), [str(d) for d in ds], {str(d): cond[j, d] for d in ds})]
    fate: dict[int, JobStatus] = {}

    def end(j: int, status: JobStatus) -> None:
        assert j not in fate, f"job {j} ended twice"
        fate[j] = status
        freed, doomed = w.ended(str(j), status)
        ready.extend(int(f) for f in freed)
        for child, _ in doomed:
            if int(child) not in fate:  # doomed twice (two of its dependencies): the store's guard cancels it once
                end(int(child), S.CANCELLED)

    while ready:
        j = ready.pop(rnd.randrange(len(ready)))
        end(j, outcome[j])
    assert fate == reference_fates(dag, cond, outcome)
    assert not w.blockers and not w.children and not w.conditions


@given(dags(), st.lists(st.floats(0, 100), min_size=40, max_size=40))
def test_critical_path_is_a_longest_chain(dag: dict[int, list[int]], times: list[float]) -> None:
    nodes = {str(j): Node(str(j), str(j), S.COMPLETED, [str(d) for d in ds], 0.0, times[j]) for j, ds in dag.items()}
    path = critical_path(nodes, now=1000.0)
    assert all(path[i] in nodes[path[i + 1]].deps for i in range(len(path) - 1))
    longest: dict[int, float] = {}
    for j in sorted(dag):
        longest[j] = times[j] + max((longest[d] for d in dag[j]), default=0.0)
    assert sum(times[int(p)] for p in path) == pytest.approx(max(longest.values()))


names = st.from_regex(r"[a-z][a-z0-9_.-]{0,9}", fullmatch=True)
env_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,5}", fullmatch=True)
job_ids = st.from_regex(r"[0-9a-f]{12}", fullmatch=True)
text_chars = st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))  # what JSON can carry
argv = st.lists(st.text(text_chars, max_size=8), min_size=1, max_size=3)
resources = st.fixed_dictionaries({}, optional={
    "cpu": st.sampled_from([0.25, 1.0, 2.0]), "memory": st.integers(0, 2**34),
    "custom_resources": st.dictionaries(st.sampled_from(["a", "b"]), st.floats(0.5, 4))})
specs = st.fixed_dictionaries({"command": argv}, optional={
    "name": names, "env": st.dictionaries(env_names, st.text(text_chars, max_size=5),
                                          max_size=2), "resources": resources,
    "priority": st.integers(-5, 5), "timeout": st.floats(1, 1000), "hold": st.booleans(),
    "kill_on_invalid_dep": st.booleans(), "retry_policy": st.fixed_dictionaries({"max_retries": st.integers(0, 3)}),
    "array": st.fixed_dictionaries({"indices": st.just("0-9")}, optional={"throttle": st.integers(1, 5)}),
    "tenant": st.sampled_from(["a", "b"]), "dependencies": st.lists(job_ids, max_size=2)})


@given(specs)
def test_a_stored_spec_reads_back_the_same(data: dict[str, Any]) -> None:
    """The daemon keeps a job's spec as `stored()` (defaults left out): reading it back gives the
    very spec, whatever was set, including a value equal to its default."""
    spec = JobSpec.model_validate(data)
    assert JobSpec.model_validate_json(spec.stored()) == spec


@given(st.floats(0, 1000), st.floats(1, 100), st.integers(1, 2000))
def test_retry_delay_grows_and_is_capped(delay: float, base: float, attempt: int) -> None:
    p = RetryPolicy(max_retries=5, retry_delay=delay, retry_exponential_base=base, max_delay=600)
    assert 0 <= p.delay(attempt) <= 600
    assert p.delay(attempt) >= min(p.delay(max(1, attempt - 1)), 600) - 1e-9


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(dags(max_n=25))
def test_random_dags_on_the_real_daemon(daemon: Daemon, dag: dict[int, list[int]]) -> None:
    """No job runs before its dependencies, none runs twice, every job ends COMPLETED."""
    tag = f"p{random.randrange(10**9)}"
    specs = [{"name": f"{tag}-{j}", "command": ["true"], "resources": {"cpu": 0.5},
              "dependencies": [f"{tag}-{d}" for d in ds]} for j, ds in dag.items()]
    client = daemon.client(timeout=120)
    refs = client.submit_batch(specs)
    ids = [r.id for r in refs]
    wait_until(lambda: all(client.get_job_status(i) in TERMINAL for i in ids), timeout=120, interval=0.2)
    jobs = {j.id: j for j in client.list_jobs(name=f"{tag}-*", limit=1000)}
    for j in jobs.values():
        assert j.status == "COMPLETED" and j.attempts_made == 1 and len(j.attempts) in (0, 1)
        for dep in j.spec.dependencies:
            assert jobs[dep].ended_at <= j.started_at


ids_with_repeats = st.lists(st.sampled_from([f"job{i}" for i in range(1500)]), max_size=1500)


@given(ids_with_repeats)
def test_an_in_list_is_a_power_of_two_long(ids: list[str]) -> None:
    assert all(len(c) <= IN_MAX and len(c) & (len(c) - 1) == 0 for c in id_chunks(ids))


@given(ids_with_repeats)
def test_in_lists_hold_each_id_once_in_order_and_pad_with_their_last(ids: list[str]) -> None:
    chunks = list(id_chunks(ids))
    assert [i for c in chunks for i in dict.fromkeys(c)] == list(dict.fromkeys(ids))

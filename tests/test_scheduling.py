"""Scheduling with a real daemon and real Ray, end to end: dependencies, retries, timeouts,
batches, bulk actions, the graph, through the CLI and the client. The rules themselves (priority
order, reservation, quotas, backoff, cascades, restart recovery) are tested in milliseconds in
tests/test_scheduler_rules.py. Assertions are on recorded times and states, never on sleeps."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, pid_alive, wait_until

from sage_ops.errors import Invalid

PY = "import sys; sys.exit(0)"


def view(d: Daemon, job_id: str) -> dict[str, Any]:
    return json.loads(d.run("status", "--json", job_id, check=True).stdout)


def wait_all(d: Daemon, ids: list[str]) -> list[Any]:
    client = d.client(timeout=120)
    return [client.wait(i, 300) for i in ids]


def test_chain_runs_in_order(daemon: Daemon) -> None:
    a = daemon.submit_q("--name", "prep", "--", "sleep", "0.3")
    b = daemon.submit_q("--after", a, "--", "sleep", "0.2")
    c = daemon.submit_q("--after", b, "--priority", "10", "--", "true")
    va, vb, vc = wait_all(daemon, [a, b, c])
    assert [v.status for v in (va, vb, vc)] == ["COMPLETED"] * 3
    assert va.ended_at <= vb.started_at and vb.ended_at <= vc.started_at
    assert vc.spec.dependencies == [b]


def test_failed_dependency_cancels_descendants_with_reason(daemon: Daemon) -> None:
    a = daemon.submit_q("--", "sleep", "0.5")
    refs = daemon.client().submit_batch([
        {"name": "middle", "command": ["false"], "dependencies": [a]},
        {"name": "child", "command": ["true"], "dependencies": ["middle"]},
        {"name": "grandchild", "command": ["true"], "dependencies": ["child"]},
    ])
    b, c, d = (r.id for r in refs)
    va, vb, vc, vd = wait_all(daemon, [a, b, c, d])
    assert (va.status, vb.status, vc.status, vd.status) == ("COMPLETED", "FAILED", "CANCELLED", "CANCELLED")
    assert b in vc.reason and "FAILED" in vc.reason and b in vd.reason
    assert not vc.attempts and not vd.attempts  # never ran
    # a dependency that already failed resolves at once
    late = daemon.client().submit_job({"command": ["true"], "dependencies": [b]})
    assert late.status == "CANCELLED" and b in late.reason


def test_after_notok_and_after_any_on_the_command_line(daemon: Daemon, tmp_path: Path) -> None:
    """One failing step: its --after-notok alert and its --after-any teardown run, its --after
    successor is cancelled; the batch file takes the same conditions by name."""
    step = daemon.submit_q("--name", "cond-step", "--", "false")
    alert = daemon.submit_q("--after-notok", step, "--", "echo", "alert")
    teardown = daemon.submit_q("--after-any", step, "--", "true")
    nxt = daemon.submit_q("--after-ok", step, "--", "true")
    v_step, v_alert, v_teardown, v_next = wait_all(daemon, [step, alert, teardown, nxt])
    assert (v_step.status, v_alert.status, v_teardown.status, v_next.status) == (
        "FAILED", "COMPLETED", "COMPLETED", "CANCELLED")
    assert "alert" in daemon.run("logs", alert, check=True).stdout
    kept = daemon.submit_q("--after", step, "--kill-on-invalid-dep", "no", "--", "true")
    assert f"DependencyNeverSatisfied (dependency {step} (cond-step) ended FAILED)" in daemon.run(
        "status", kept, check=True).stdout
    mixed = daemon.submit_q("--after", nxt, "--after-notok", alert, "--after-any", step, "--", "true")
    assert f"after        {nxt} · not ok: {alert} · any: {step}" in daemon.run("status", mixed, check=True).stdout
    (tmp_path / "cond.yaml").write_text(textwrap.dedent("""
        jobs:
          - {name: cond-ok, command: [true]}
          - {name: cond-alert, command: [true], after_notok: cond-ok}
    """))
    ok, never = daemon.run("submit-batch", str(tmp_path / "cond.yaml"), "-q", check=True).stdout.split()
    v_ok, v_never = wait_all(daemon, [ok, never])
    assert v_never.status == "CANCELLED" and "after-notok waits for it to fail" in v_never.reason


def test_begin_holds_a_job_until_its_moment(daemon: Daemon) -> None:
    job = daemon.submit_q("--begin", "now+3s", "--", "true")
    client = daemon.client()
    pending = client.get_job(job)
    assert (pending.status, pending.reason[:9]) == ("PENDING", "begins at")
    done = client.wait(job, 60)
    assert done.status == "COMPLETED" and done.started_at.timestamp() >= done.spec.begin_at
    assert "begin " in daemon.run("status", job, check=True).stdout
    bad = daemon.run("submit", "--begin", "soonish", "--", "true")
    assert bad.returncode == 2 and "bad time 'soonish'" in bad.stderr


def test_backfill_starts_a_short_job_around_a_reserved_one_and_status_says_why_the_big_one_waits(
        daemon: Daemon) -> None:
    client = daemon.client()
    hog = daemon.submit_q("--cpu", "3", "--timeout", "120", "--", "sleep", "60")
    try:
        wait_until(lambda: client.get_job(hog).status == "RUNNING", 60)
        big = daemon.submit_q("--cpu", "4", "--priority", "5", "--", "true")
        short = daemon.submit_q("--cpu", "1", "--timeout", "30", "--", "true")
        assert client.wait(short, 60).status == "COMPLETED"
        waiting = client.get_job(big)
        status = daemon.run("status", big, check=True).stdout
        wide = daemon.run("jobs", "-o", "wide", check=True).stdout
    finally:
        daemon.run("cancel", hog)
    assert (waiting.status, waiting.pending.code if waiting.pending else None) == ("PENDING", "Resources")
    assert "Resources (needs CPU=4, largest free CPU=1; reserved from" in status
    assert "in ~1m" in wide  # the hog's limit frees the node
    assert client.wait(big, 60).status == "COMPLETED"


def test_an_array_with_a_throttle_its_indices_and_a_finally_job_on_the_command_line(daemon: Daemon) -> None:
    array = daemon.run("submit", "--array", "0-5%2", "--name", "sweep-e2e", "-q", "--", "sh", "-c",
                       'echo "index=$SAGE_OPS_ARRAY_INDEX arg={index}"; test "$SAGE_OPS_ARRAY_INDEX" != 3',
                       check=True).stdout.strip()
    report = daemon.submit_q("--finally-of", array, "--", "true")
    client = daemon.client()
    done = client.wait(array, 120)
    assert (done.status, done.array.completed if done.array else None, done.array.failed if done.array else None
            ) == ("FAILED", 5, 1)
    assert client.wait(report, 60).status == "COMPLETED"
    tasks = client.list_jobs(array=array)
    spans = [(t.started_at, t.ended_at) for t in tasks]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert (len(tasks), most <= 2) == (6, True)  # never more than the throttle at once
    assert "index=4 arg=4" in daemon.run("logs", f"{array}_4", check=True).stdout
    assert "6/6 done, 1 failed" in daemon.run("jobs", "--arrays", check=True).stdout
    assert f"{array}_0" not in daemon.run("jobs", check=True).stdout  # an array is one row
    bad = daemon.run("submit", "--array", "5-1", "--", "true")
    assert bad.returncode == 2 and "bad array range '5-1'" in bad.stderr


def test_a_preempted_job_gets_its_signal_is_requeued_and_knows_it_restarted(daemon: Daemon) -> None:
    script = ('echo "restart=$SAGE_OPS_RESTART_COUNT"; trap \'echo "got USR1"; exit 0\' USR1; '
              'sleep 120 & wait')
    low = daemon.submit_q("--preemptible", "--signal", "USR1@5", "--cpu", "4", "--", "sh", "-c", script)
    client = daemon.client()
    try:
        wait_until(lambda: "restart=0" in daemon.run("logs", low).stdout, 60)
        high = daemon.submit_q("--priority", "5", "--cpu", "4", "--", "true")
        assert client.wait(high, 60).status == "COMPLETED"
        wait_until(lambda: "restart=1" in daemon.run("logs", low).stdout, 60)  # its second run
        logs = daemon.run("logs", low, check=True).stdout
        history = daemon.run("history", low, check=True).stdout
    finally:
        daemon.run("cancel", low)
    assert "got USR1" in logs
    assert f"preempted by {high}; requeued" in history


def test_signal_warns_a_job_before_its_time_limit(daemon: Daemon) -> None:
    job = daemon.submit_q("--timeout", "6", "--signal", "USR1@3", "--", "sh", "-c",
                          "trap 'echo warned' USR1; sleep 30 & wait; sleep 30")
    done = daemon.client().wait(job, 60)
    assert (done.status, done.reason) == ("FAILED", "timeout")
    assert "warned" in daemon.run("logs", job, check=True).stdout


def test_hold_and_release_on_the_command_line(daemon: Daemon) -> None:
    job = daemon.submit_q("--hold", "--name", "hold-me", "--", "true")
    assert json.loads(daemon.run("status", "--json", job, check=True).stdout)["reason"] == "held by user"
    planned = daemon.run("release", "--name", "hold-me", "--dry-run", check=True)
    assert job in planned.stdout + planned.stderr
    assert daemon.run("release", job).returncode == 0
    assert daemon.client().wait(job, 60).status == "COMPLETED"
    late = daemon.run("hold", job)
    assert late.returncode == 1 and f"job {job} is COMPLETED: only a waiting job can be held" in late.stderr


def test_retry_with_dependents_on_the_command_line(daemon: Daemon, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    step = daemon.submit_q("--", "sh", "-c", f"test -e {fixed}")
    after = daemon.submit_q("--after", step, "--", "true")
    assert [v.status for v in wait_all(daemon, [step, after])] == ["FAILED", "CANCELLED"]
    fixed.touch()
    daemon.run("retry", step, "--with-dependents", check=True)
    assert [v.status for v in wait_all(daemon, [step, after])] == ["COMPLETED", "COMPLETED"]


def test_update_a_waiting_job_on_the_command_line(daemon: Daemon) -> None:
    first = daemon.submit_q("--hold", "--", "true")
    other = daemon.submit_q("--", "true")
    job = daemon.submit_q("--after", first, "--", "true")
    out = daemon.run("update", job, "--after", other, "--priority", "5", "--timeout", "1h", check=True)
    assert "updated: priority 0 -> 5, timeout - -> 3600s, dependencies" in out.stdout
    assert daemon.client().wait(job, 60).status == "COMPLETED"  # `first` is still held: it waited for `other`
    second = daemon.submit_q("--after", first, "--", "true")
    cycle = daemon.run("update", first, "--after", second)
    assert cycle.returncode == 1 and f"cycle: {second} waits for {first}" in cycle.stderr
    daemon.client().cancel_jobs([first])


def test_unknown_dependency_and_cycle_are_rejected(daemon: Daemon) -> None:
    out = daemon.run("submit", "--after", "doesnotexist", "--", "true")
    assert out.returncode == 1 and "unknown dependency: doesnotexist" in out.stderr
    client = daemon.client()
    before = client.get_statistics().total_jobs
    cycle = [{"name": "x", "command": ["true"], "dependencies": ["y"]},
             {"name": "y", "command": ["true"], "dependencies": ["x"]}]
    with pytest.raises(Invalid, match="cycle"):
        client.submit_batch(cycle)
    with pytest.raises(Invalid, match="unknown dependency"):
        client.submit_batch([{"name": "ok", "command": ["true"]}, {"command": ["true"], "dependencies": ["nope"]}])
    assert client.get_statistics().total_jobs == before  # all or nothing


RETRY_SCRIPT = textwrap.dedent("""
    import os, sys
    attempt = int(os.environ["SAGE_OPS_ATTEMPT"])
    print("attempt", attempt)
    sys.exit(0 if attempt >= 3 else 1)
""")


def test_retries_with_backoff_then_success(daemon: Daemon) -> None:
    script = daemon.home / "flaky.py"
    script.write_text(RETRY_SCRIPT)
    job_id = daemon.client().submit_script(str(script), retry_policy={"max_retries": 2, "retry_delay": 0.5,
                                                                       "retry_exponential_base": 2})
    final = daemon.client().wait(job_id, 120)
    assert final.status == "COMPLETED" and final.attempts_made == 3
    a = final.attempts
    assert [x.status for x in a] == ["FAILED", "FAILED", "COMPLETED"] and [x.exit_code for x in a] == [1, 1, 0]
    assert (a[1].started_at - a[0].ended_at).total_seconds() >= 0.5  # delay * base**0
    assert (a[2].started_at - a[1].ended_at).total_seconds() >= 1.0  # delay * base**1
    history = daemon.run("history", job_id, check=True).stdout
    assert "retry 1 of 2" in history and "retry 2 of 2" in history
    logs = daemon.run("logs", job_id, check=True).stdout
    assert all(f"attempt {n}" in logs for n in (1, 2, 3))


def test_timeout_fails_and_kills_the_process(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--timeout", "1", "--", "sh", "-c", "echo pid=$$; sleep 300")
    final = daemon.client().wait(job_id, 60)
    assert final.status == "FAILED" and final.reason == "timeout"
    pid = final.attempts[0].pid
    assert pid and not pid_alive(pid)


def test_set_priority_while_pending_and_not_after(daemon: Daemon) -> None:
    blocker = daemon.submit_q("--", "sleep", "30")
    waiting = daemon.submit_q("--after", blocker, "--", "true")
    out = daemon.run("set-priority", waiting, "50", check=True)
    assert "priority 50" in out.stdout
    assert view(daemon, waiting)["priority"] == 50
    assert "priority 0 -> 50" in daemon.run("history", waiting, check=True).stdout
    wait_until(lambda: view(daemon, blocker)["status"] == "RUNNING")
    late = daemon.run("set-priority", blocker, "5")
    assert late.returncode == 1 and "only while the job waits" in late.stderr
    daemon.run("cancel", blocker, check=True)
    assert view(daemon, waiting)["status"] == "CANCELLED"


def test_bulk_cancel_by_name_glob_affects_exactly_the_matches(daemon: Daemon) -> None:
    blocker = daemon.submit_q("--", "sleep", "60")
    client = daemon.client()
    specs = [{"name": f"sweep-{i}", "command": ["true"], "dependencies": [blocker]} for i in range(5)]
    specs += [{"name": f"keep-{i}", "command": ["true"], "dependencies": [blocker]} for i in range(3)]
    refs = client.submit_batch(specs)
    out = json.loads(daemon.run("cancel", "--status", "PENDING", "--name", "sweep-*", "--json", check=True).stdout)
    sweep = {r.id for r in refs if r.name.startswith("sweep-")}
    assert {j["id"] for j in out["affected"]} == sweep and not out["errors"]
    assert {v.name: v.status for v in client.list_jobs(name="keep-*")} == {f"keep-{i}": "PENDING" for i in range(3)}
    # cancelling the blocker cancels everything still waiting for it, and says so
    res = client.cancel_jobs([blocker])
    assert [r.id for r in res.affected] == [blocker]
    assert {r.name for r in res.cascaded} == {f"keep-{i}" for i in range(3)}
    assert usage_error(daemon, "cancel") and usage_error(daemon, "cancel", blocker, "--name", "x")


def usage_error(d: Daemon, *args: str) -> bool:
    out = d.run(*args)
    return out.returncode == 2 and out.stderr.count("\n") == 1


def test_retry_a_failed_job_as_a_new_attempt(daemon: Daemon) -> None:
    marker = daemon.home / "ok-now"
    job_id = daemon.submit_q("--", "sh", "-c", f"test -e {marker}")
    assert daemon.client().wait(job_id, 60).status == "FAILED"
    marker.touch()
    out = daemon.run("retry", job_id, check=True)
    assert job_id in out.stdout
    final = daemon.client().wait(job_id, 60)
    assert final.status == "COMPLETED" and final.attempts_made == 2
    assert [a.status for a in final.attempts] == ["FAILED", "COMPLETED"]
    again = daemon.run("retry", daemon.submit_q("--", "sleep", "30"))
    assert again.returncode == 1 and "only a finished job" in again.stderr


def test_batch_file_graph_and_history(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('training')\n")
    (tmp_path / "jobs.yaml").write_text(textwrap.dedent("""
        defaults: {resources: {cpu: 0.5}}
        jobs:
          - {name: g-prep, command: sleep 0.2}
          - {name: g-train, script: train.py, after: [g-prep]}
          - {name: g-side, command: [true], after: g-prep}
          - {name: g-eval, command: [true], after: [g-train, g-side], priority: 5}
    """))
    out = daemon.run("submit-batch", str(tmp_path / "jobs.yaml"), "-q", check=True)
    ids = out.stdout.split()
    assert len(ids) == 4
    wait_all(daemon, ids)
    g = json.loads(daemon.run("graph", ids[3], "--json", check=True).stdout)
    assert g["total"] == 4 and g["completed"] == 4 and g["done"] == 4
    assert g["order"][0] == ids[0] and g["order"][-1] == ids[3]
    assert g["critical_path"][0] == ids[0] and g["critical_path"][-1] == ids[3]
    drawn = daemon.run("graph", ids[1], check=True).stdout
    assert "g-eval" in drawn and "critical path" in drawn
    assert "training" in daemon.run("logs", ids[1], check=True).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  - {name: x, command: [true], resources: {memory: 8XB}}\n")
    res = daemon.run("submit-batch", str(bad))
    assert res.returncode == 2 and "jobs[0]" in res.stderr and res.stderr.count("\n") == 1


def test_thousand_job_batch_with_a_hundred_deep_chain(new_daemon) -> None:  # noqa: ANN001
    d: Daemon = new_daemon({"jobmanager": {"max_jobs": 10_000}})
    d.start()
    rng = random.Random(7)
    specs: list[dict[str, Any]] = [{"name": f"c{i}", "command": ["true"], "resources": {"cpu": 0.25},
                                    "dependencies": [f"c{i - 1}"] if i else []} for i in range(100)]
    for i in range(900):
        deps = rng.sample([f"c{k}" for k in range(100)], k=rng.randint(0, 2))
        specs.append({"name": f"w{i}", "command": ["true"], "resources": {"cpu": 0.25}, "dependencies": deps})
    client = d.client(timeout=300)
    refs = client.submit_batch(specs)
    client.wait(refs[99].id, 300)
    wait_until(lambda: client.get_statistics().active_jobs == 0, timeout=300)
    assert_valid_run(client, [r.id for r in refs])


def assert_valid_run(client: Any, ids: list[str]) -> None:
    """No job started before its dependencies ended, none ran twice, all completed."""
    jobs = {j.id: j for j in client.list_jobs(limit=100_000) if j.id in set(ids)}
    assert len(jobs) == len(ids)
    for j in jobs.values():
        assert j.status == "COMPLETED" and j.attempts_made == 1, (j.id, j.status, j.reason)
        for dep in j.spec.dependencies:
            assert jobs[dep].ended_at <= j.started_at, (dep, j.id)


def test_jobs_filters_and_cursor_pages(daemon: Daemon) -> None:
    client = daemon.client()
    client.submit_batch([{"name": f"page-{i}", "command": ["true"]} for i in range(7)])
    seen, cursor = [], None
    while True:
        page = client.list_jobs(name="page-*", limit=3, cursor=cursor, page=True)
        seen += [j.name for j in page.jobs]
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == [f"page-{i}" for i in reversed(range(7))]
    out = daemon.run("jobs", "--name", "page-*", "--limit", "3")
    assert "--cursor" in out.stderr
    assert client.list_jobs(name="page-*", since="2000-01-01T00:00:00") and not client.list_jobs(
        name="page-*", until="2000-01-01T00:00:00")


def test_retry_of_a_rejected_job_is_a_clear_conflict(daemon: Daemon) -> None:
    """Found by the fuzzer: a job REJECTED for an unknown dependency, then retried, was a 500."""
    job = daemon.client().submit_job({"command": ["true"], "dependencies": ["nope"]})
    assert job.status == "REJECTED"
    out = daemon.run("retry", job.id)
    assert out.returncode == 1 and "only a finished job can be retried" in out.stderr

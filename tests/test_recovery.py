"""Crash recovery: the daemon is SIGKILLed at awkward moments and restarted; nothing is lost,
nothing runs twice, nothing stays stuck."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from conftest import Daemon, pid_alive, wait_until

from sage_ops.errors import SageOpsError
from sage_ops.lifecycle import TERMINAL


def kill9(d: Daemon) -> None:
    pid = int((d.state / "daemon.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid))


def test_kill9_with_200_jobs_in_flight_each_runs_once(new_daemon) -> None:  # noqa: ANN001
    d: Daemon = new_daemon()
    d.start()
    ledger = d.home / "ledger.txt"
    cmd = ["sh", "-c", f'echo "$SAGE_OPS_JOB_ID" >> {ledger}; sleep 0.2']
    client = d.client(timeout=60)
    ids = [r.id for r in client.submit_batch([{"command": cmd, "name": f"f{i}", "resources": {"cpu": 0.5},
                                               "retry_policy": {"max_retries": 1, "retry_delay": 0.5}}
                                              for i in range(200)])]
    wait_until(lambda: ledger.exists() and len(ledger.read_text().split()) >= 20)
    kill9(d)
    time.sleep(1.0)  # jobs keep running in Ray while no daemon is up
    d.start()
    client = d.client(timeout=60)
    wait_until(lambda: client.get_statistics().active_jobs == 0, timeout=300, interval=0.2)
    jobs = {j.id: j for j in client.list_jobs(limit=1000)}
    assert all(jobs[i].status == "COMPLETED" for i in ids), {jobs[i].status for i in ids}
    runs = ledger.read_text().split()
    assert sorted(runs) == sorted(ids)  # every job ran, and exactly once
    assert all(jobs[i].attempts_made == 1 for i in ids)


def test_kill9_during_a_batch_submit_is_all_or_nothing(new_daemon) -> None:  # noqa: ANN001
    d: Daemon = new_daemon({"jobmanager": {"max_jobs": 100_000}})
    d.start()
    blocker = d.client().submit_job({"command": ["sleep", "600"], "resources": {"cpu": 0.001}, "name": "hold"})
    outcome: list[Any] = []

    def submit() -> None:
        try:
            outcome.append(d.client(timeout=60, retry_attempts=0).submit_batch(
                [{"command": ["true"], "name": f"b-{i}", "dependencies": [blocker.id]} for i in range(30_000)]))
        except (SageOpsError, httpx.HTTPError) as exc:
            outcome.append(exc)

    t = threading.Thread(target=submit)
    t.start()
    time.sleep(0.8)  # mid-request: parsing, validating or committing
    kill9(d)
    t.join(60)
    d.start()
    got = d.client().list_jobs(name="b-*", limit=100_000)
    d.client().cancel_jobs([blocker.id])  # jobs outlive their daemon in Ray: leave the cluster free
    assert len(got) in (0, 30_000)
    if isinstance(outcome[0], list):  # acknowledged: it must all be there
        assert len(got) == 30_000


def test_submit_with_an_idempotency_key_is_not_duplicated(daemon: Daemon) -> None:
    client = daemon.client()
    spec = {"command": ["true"], "name": "once"}
    headers = {"Idempotency-Key": "job-abc-1"}
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket))) as http:
        first = http.post("http://sage-ops/v1/jobs", json=spec, headers=headers)
        again = http.post("http://sage-ops/v1/jobs", json=spec, headers=headers)
        other = http.post("http://sage-ops/v1/jobs", json={**spec, "name": "twice"}, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]["message"]
    assert len(client.list_jobs(name="once")) == 1
    # a batch whose jobs depend on each other by name: the retried request is the same request
    batch = {"jobs": [{"name": "idem-a", "command": ["true"]},
                      {"name": "idem-b", "command": ["true"], "dependencies": ["idem-a"]}]}
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket))) as http:
        made = http.post("http://sage-ops/v1/jobs/batch", json=batch, headers={"Idempotency-Key": "batch-1"})
        again = http.post("http://sage-ops/v1/jobs/batch", json=batch, headers={"Idempotency-Key": "batch-1"})
    assert (made.status_code, again.status_code) == (201, 200)
    assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in made.json()["jobs"]]


def test_restart_finishes_nothing_twice_and_leaves_nothing_stuck(new_daemon) -> None:  # noqa: ANN001
    d: Daemon = new_daemon()
    d.start()
    client = d.client()
    flaky = client.submit_job({"command": ["sh", "-c", 'test "$SAGE_OPS_ATTEMPT" -ge 2'],
                               "retry_policy": {"max_retries": 1, "retry_delay": 2}}).id
    waiting = client.submit_job({"command": ["true"], "dependencies": [flaky]}).id
    long = client.submit_job({"command": ["sleep", "2"]}).id
    wait_until(lambda: client.get_job(flaky).attempts_made == 1)
    kill9(d)
    d.start()
    client = d.client()
    finals = [client.wait(j, 60) for j in (flaky, waiting, long)]
    assert [f.status for f in finals] == ["COMPLETED"] * 3
    assert all(e.to_status in TERMINAL or e.to_status != "COMPLETED" for e in client.get_job_events(long))
    assert [e.to_status for e in client.get_job_events(long)].count("COMPLETED") == 1


def test_a_dead_worker_is_a_failed_attempt_and_is_retried(daemon: Daemon) -> None:
    client = daemon.client()
    script = 'if [ "$SAGE_OPS_ATTEMPT" -ge 2 ]; then echo second; exit 0; fi; echo first; sleep 300'
    job_id = client.submit_job({"command": ["sh", "-c", script], "retry_policy": {"max_retries": 1}}).id
    wait_until(lambda: "first" in daemon.run("logs", job_id).stdout)
    leader = client.get_job(job_id).attempts[0].pid
    worker = int(Path(f"/proc/{leader}/stat").read_text().split(")")[-1].split()[1])
    os.kill(worker, signal.SIGKILL)  # what the OOM killer or a lost node does to a Ray worker
    final = client.wait(job_id, 120)
    assert final.status == "COMPLETED" and final.attempts_made == 2
    first = final.attempts[0]
    assert first.status == "FAILED" and first.exit_code is None
    events = client.get_job_events(job_id)
    retry = next(e for e in events if e.from_status == "RUNNING" and e.to_status == "PENDING")
    assert "node " in retry.reason and "retry 1 of 1" in retry.reason


def test_the_daemon_outlives_its_ray_head_and_reconnects(new_daemon) -> None:  # noqa: ANN001
    """The head dies under a running job: the daemon stays up, reports it, starts a new head
    (ray.address: local), and the lost attempt is retried there."""
    from sage_ops.server.backend.ray_backend import LocalHead

    d: Daemon = new_daemon({"ray": {"address": "local", "include_dashboard": False, "num_cpus": 1}})
    d.env.pop("SAGE_OPS_RAY__ADDRESS", None)
    d.start()
    pid = int((d.state / "daemon.pid").read_text())
    client = d.client(retry_attempts=1, timeout=10)
    script = 'if [ "$SAGE_OPS_ATTEMPT" -ge 2 ]; then exit 0; fi; sleep 300'
    job = client.submit_job({"command": ["sh", "-c", script], "retry_policy": {"max_retries": 1}}).id
    wait_until(lambda: client.get_job_status(job) == "RUNNING")
    def probe() -> Any:
        try:
            return client.health_check()
        except SageOpsError:  # the daemon is starting over: a short gap
            return None

    try:
        LocalHead(d.state).stop()  # the head and everything on it dies
        wait_until(lambda: (h := probe()) is not None and not h.ray.connected and h.status == "degraded", 60)
        wait_until(lambda: (h := probe()) is not None and h.ray.connected, timeout=120)
        final = client.wait(job, 120)
        assert final.status == "COMPLETED" and final.attempts_made == 2
        assert final.attempts[0].status == "FAILED"  # lost with its head ("killed by ..." or "lost: ...")
        assert int((d.state / "daemon.pid").read_text()) == pid and Path(f"/proc/{pid}").exists()
    finally:
        d.stop()
        LocalHead(d.state).stop()


def test_a_lost_node_is_a_failed_attempt_retried_on_another_node(ray_head, daemon: Daemon) -> None:  # noqa: ANN001
    from conftest import RayNode

    nodes = [RayNode(ray_head, f"pool_{x}", 1, {"pool": 1}) for x in "ab"]
    client = daemon.client()
    try:
        wait_until(lambda: client.health_check().ray.resources.get("pool") == 2, timeout=60)
        script = 'if [ "$SAGE_OPS_ATTEMPT" -ge 2 ]; then echo second; exit 0; fi; echo first; sleep 300'
        job = client.submit_job({"command": ["sh", "-c", script], "resources": {"cpu": 1, "custom_resources":
                                 {"pool": 1}}, "retry_policy": {"max_retries": 1}}).id
        wait_until(lambda: "first" in daemon.run("logs", job).stdout)
        leader = client.get_job(job).attempts[0].pid
        worker = int(Path(f"/proc/{leader}/stat").read_text().split(")")[-1].split()[1])
        raylet = int(Path(f"/proc/{worker}/stat").read_text().split(")")[-1].split()[1])
        cmd = Path(f"/proc/{raylet}/cmdline").read_bytes().decode(errors="replace")
        lost = next(n for n in nodes if f"{n.tag}," in cmd)
        lost_id = lost.node_id()
        lost.kill()  # the machine is gone: raylet, workers and agents
        final = client.wait(job, 180)
        assert final.status == "COMPLETED" and final.attempts_made == 2
        retry = next(e for e in client.get_job_events(job) if e.from_status == "RUNNING" and e.to_status == "PENDING")
        assert lost_id and f"Ray node {lost_id[:8]}" in retry.reason, retry.reason
        assert "second" in daemon.run("logs", job).stdout  # ran again, on the node that is left
    finally:
        for n in nodes:
            n.kill()

"""Two daemons on one real PostgreSQL: a leader and a standby; kill the leader, the standby takes
over, jobs finish exactly once, and a client with both addresses never sees an error."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any

from conftest import Daemon, wait_until

from sage_ops.client import JobManagerClient
from sage_ops.errors import SageOpsError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pair(new_daemon: Any, url: str, shared: str) -> tuple[Daemon, Daemon]:
    made = []
    for _ in range(2):
        # daemons of one database share its sealing key (and so the dispatcher's key)
        d: Daemon = new_daemon({"database": {"url": url}, "storage": {"path": shared},
                                "security": {"secret_key_file": f"{shared}.secret.key"},
                                "jobmanager": {"host": "127.0.0.1", "port": free_port(), "heartbeat_interval": 3}})
        made.append(d)
    made[0].start()
    made[1].start()
    return made[0], made[1]


def pid_of(d: Daemon) -> int:
    return int((d.state / "daemon.pid").read_text().strip())


def health(d: Daemon) -> Any:
    return d.client(retry_attempts=1, timeout=5).health_check()


def test_standby_takes_over_and_jobs_finish_once(new_daemon, postgres, tmp_path) -> None:  # noqa: ANN001
    a, b = pair(new_daemon, postgres(), str(tmp_path / "storage"))
    ha, hb = health(a), health(b)
    assert (ha.role, hb.role) == ("leader", "standby")
    assert hb.leader["address"] == ha.tcp and hb.leader["epoch"] == ha.leader["epoch"]
    token = (a.home / "config" / "sage-ops" / "token").read_text().strip()
    client = JobManagerClient(f"tcp://{ha.tcp},tcp://{hb.tcp}", token=token, config={"timeout": 10})
    # a standby refuses writes, naming the leader (asked once: no failover to ride out)
    refused = b.client(retry_attempts=0, failover_timeout=0).submit_job
    try:
        refused({"command": ["true"]})
        raise AssertionError("the standby accepted a write")
    except SageOpsError as exc:
        assert exc.code == "not_leader" and ha.tcp in exc.message
    ledger = tmp_path / "ledger.txt"
    cmd = ["sh", "-c", f'sleep 1.5; echo "$SAGE_OPS_JOB_ID" >> {ledger}']
    ids = [client.submit_job({"command": cmd, "resources": {"cpu": 0.25}}).id for _ in range(12)]
    wait_until(lambda: client.get_statistics().running_jobs >= 4)
    errors: list[Exception] = []
    more: list[str] = []

    def keep_submitting() -> None:  # through the failover: every call must succeed
        for _ in range(8):
            try:
                more.append(client.submit_job({"command": cmd, "resources": {"cpu": 0.25}}).id)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
            time.sleep(0.5)

    t = threading.Thread(target=keep_submitting)
    killed_at = time.monotonic()
    os.kill(pid_of(a), signal.SIGKILL)
    t.start()
    wait_until(lambda: health(b).role == "leader", timeout=30)
    took_over = time.monotonic() - killed_at
    t.join(60)
    assert not errors, errors
    all_ids = ids + more
    for job_id in all_ids:
        assert client.wait(job_id, 120).status == "COMPLETED"
    runs = ledger.read_text().split()
    assert sorted(runs) == sorted(all_ids)  # each ran exactly once
    assert took_over < 30


def test_a_deposed_leader_does_not_write(new_daemon, postgres, tmp_path) -> None:  # noqa: ANN001
    a, b = pair(new_daemon, postgres(), str(tmp_path / "storage"))
    os.kill(pid_of(a), signal.SIGSTOP)  # a long pause (GC, swap, a VM migration)
    try:
        wait_until(lambda: health(b).role == "leader", timeout=30)
        job = b.client().submit_job({"command": ["true"], "name": "after-takeover"})
    finally:
        os.kill(pid_of(a), signal.SIGCONT)
    wait_until(lambda: health(a).role == "standby", timeout=30)
    try:
        a.client(retry_attempts=0, failover_timeout=0).cancel_job(job.id)
        raise AssertionError("the deposed leader wrote")
    except SageOpsError as exc:
        assert exc.code == "not_leader"
    assert b.client().wait(job.id, 60).status == "COMPLETED"
    trail = [e.to_status for e in b.client().get_job_events(job.id)]
    assert "CANCELLED" not in trail  # the deposed leader's cancel left nothing
    # born PENDING, or SUBMITTED then PENDING when b's Ray was not connected yet at the submit
    assert trail[-3:] == ["PENDING", "RUNNING", "COMPLETED"]

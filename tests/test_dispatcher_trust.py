"""The dispatcher actor trusts no caller (issue 21). Any Ray driver can look it up by name, as a
job that uses Ray itself can; without the daemon's key it cannot hello, poll, submit or cancel,
and without an attempt's capability (which only that attempt's runner holds) it cannot report on
the attempt. Each test drives the real actor of a real daemon from a driver of its own, the way
such a job would, trying the call as the actor of each version takes it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_until

from sage_ops.server.storage.job_output import Output
from sage_ops.server.storage.logs import LogStore

ATTACKER = r'''
import json, os, sys, time, uuid
import ray
ray.init(address=os.environ["SAGE_OPS_RAY__ADDRESS"], namespace="sgo-attacker-" + uuid.uuid4().hex,
         logging_level="ERROR", log_to_driver=False)
actor = ray.get_actor(sys.argv[1], namespace="sage-ops")
job, guess = sys.argv[2], b"\0" * 32
cap = None if sys.argv[3] == "missing" else guess
forged = ('{"timestamp":"2024-01-01T00:00:00Z","stream":"stdout","message":"FORGED","attempt":1}\n').encode()
evil = {"id": "evil" + uuid.uuid4().hex[:8], "attempt": 1, "spec": {"kind": "command", "command": ["true"]},
        "opts": {}, "resources": {"cpu": 0.25, "gpu": 0}, "cap": guess}
calls = {  # method: (its arguments before keys, its arguments now, with a guess for the key)
    "hello": ((), (guess,)),
    "poll": (("", 0, 0, 0), (guess, "", 0, 0, 0)),
    "submit": (([evil],), (guess, [evil])),
    "cancel": ((job, 0), (guess, job, 0)),
    "logs": ((job, 1, 0, forged), (job, 1, 0, forged, cap)),
    "started": ((job, 1, "forged-node", 1, time.time()), (job, 1, cap, "forged-node", 1, time.time())),
}

def call(method):
    for args in calls[method]:
        try:
            ray.get(getattr(actor, method).remote(*args), timeout=60)
            return "accepted"
        except PermissionError:
            return "refused"
        except TypeError:
            continue  # not this version's signature
    return "no signature fits"

for method in sys.argv[4:]:
    print(method, call(method), flush=True)
'''


def actor_name(daemon: Daemon) -> str:
    """The daemon's dispatcher actor, as RayBackend names it (from the database's instance id)."""
    with sqlite3.connect(daemon.state / "sage-ops.db") as db:
        instance = db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()[0]
    return f"dispatcher-{hashlib.sha1(instance.encode()).hexdigest()[:12]}"


def attack(daemon: Daemon, *methods: str, job: str = "none", cap: str = "wrong") -> dict[str, str]:
    """Each method called on the daemon's actor from a driver without the key: its outcome."""
    out = subprocess.run([sys.executable, "-c", ATTACKER, actor_name(daemon), job, cap, *methods],
                         env=daemon.env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(line.split(" ", 1) for line in out.stdout.splitlines())


def settle(daemon: Daemon) -> None:
    """Until the daemon has applied every event the actor had before now: a job submitted now
    ends after them, and the daemon applies events in order."""
    marker = daemon.submit_q("--cpu", "0.25", "--", "true")
    with daemon.client(timeout=150) as client:
        assert client.wait(marker, timeout=120).status == "COMPLETED"


@pytest.fixture
def victim(daemon: Daemon) -> Iterator[str]:
    """A running job of the daemon's (another tenant's, to the attacker)."""
    job_id = daemon.submit_q("--", "sleep", "300")
    with daemon.client(timeout=30) as client:
        wait_until(lambda: client.get_job_status(job_id) == "RUNNING", timeout=120)
    yield job_id
    daemon.run("cancel", job_id)


@pytest.mark.parametrize("method", ["hello", "poll", "submit", "cancel"])
def test_a_driver_without_the_daemons_key_is_refused(daemon: Daemon, method: str) -> None:
    assert attack(daemon, method) == {method: "refused"}


def test_a_cancel_without_the_key_leaves_the_job_running(daemon: Daemon, victim: str) -> None:
    attack(daemon, "cancel", job=victim)
    settle(daemon)
    with daemon.client(timeout=30) as client:
        assert client.get_job_status(victim) == "RUNNING"


@pytest.mark.parametrize("cap", ["missing", "wrong"])
def test_forged_log_lines_never_reach_another_jobs_log(daemon: Daemon, victim: str, cap: str) -> None:
    attack(daemon, "logs", job=victim, cap=cap)
    settle(daemon)
    lines = daemon.run("logs", "--json", victim, check=True).stdout.splitlines()
    assert "FORGED" not in [json.loads(line)["message"] for line in lines]


class Blocker:
    """A Ray actor of the test's own holding all but a quarter of the head's CPUs: the daemon
    (which counts only what it dispatched) sends a 1-CPU job to Ray, where it waits, dispatched
    but not started; a 0.25-CPU job still runs."""

    SCRIPT = r'''
import os, sys, uuid
import ray
ray.init(address=os.environ["SAGE_OPS_RAY__ADDRESS"], namespace="sgo-blocker-" + uuid.uuid4().hex,
         logging_level="ERROR", log_to_driver=False)
cpus = ray.cluster_resources()["CPU"] - 0.25
@ray.remote
class Hold:
    def ready(self): return True
h = Hold.options(num_cpus=cpus).remote()
ray.get(h.ready.remote(), timeout=120)
print("holding", flush=True)
sys.stdin.readline()
'''

    def __init__(self, daemon: Daemon) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT], env=daemon.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "holding"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("go\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def test_a_forged_start_does_not_start_a_job_waiting_in_ray(daemon: Daemon) -> None:
    blocker = Blocker(daemon)
    job_id = ""
    try:
        job_id = daemon.submit_q("--cpu", "1", "--", "true")
        with daemon.client(timeout=30) as client:
            wait_until(lambda: client.get_job_status(job_id) == "PENDING", timeout=60)
            attack(daemon, "started", job=job_id)
            settle(daemon)
            assert client.get_job_status(job_id) == "PENDING"
    finally:
        blocker.release()
        if job_id:
            daemon.run("cancel", job_id)


@pytest.fixture
def fresh(new_daemon: Any) -> Daemon:
    d = new_daemon()
    d.start()
    return d


def test_a_burst_of_refused_calls_is_one_audit_row(fresh: Daemon) -> None:
    attack(fresh, *["poll"] * 20)
    settle(fresh)
    with fresh.client(timeout=30) as client:
        assert len(client.audit(action="dispatcher.refused")) == 1


def test_refused_calls_are_counted_in_the_metrics(fresh: Daemon) -> None:
    attack(fresh, "poll", "hello", "submit")
    settle(fresh)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(fresh.socket)), base_url="http://x") as h:
        assert "\nsage_ops_dispatcher_refused_total 3\n" in h.get("/metrics").text


# -- log blocks are checked where they are stored --------------------------------------------------

LINE = b'{"timestamp":"2024-01-01T00:00:00Z","stream":"stdout","message":"%s","attempt":%d}\n'


IMPOSTOR = r'''
import os, sys, uuid
import ray
ray.init(address=os.environ["SAGE_OPS_RAY__ADDRESS"], namespace="sgo-impostor-" + uuid.uuid4().hex,
         logging_level="ERROR", log_to_driver=False)
name, marker = sys.argv[1], sys.argv[2]

class Boom:  # un-pickled by whoever reads a reply: runs a command there
    def __reduce__(self):
        return (os.system, (f"touch {marker}",))

@ray.remote(num_cpus=0)
class Impostor:
    def __getattr__(self, _name):
        return lambda *a, **k: Boom()
    def hello(self, *a): return Boom()
    def busy(self, *a): return Boom()
    def poll(self, *a, **k): return Boom()
    def submit(self, *a): return Boom()

ray.kill(ray.get_actor(name, namespace="sage-ops"))
for _ in range(100):  # the name is free once the kill has gone through
    try:
        it = Impostor.options(name=name, namespace="sage-ops", lifetime="detached").remote()
        break
    except ValueError:
        import time; time.sleep(0.1)
print(it._actor_id.hex(), flush=True)
'''


def test_an_impostor_under_the_actors_name_is_never_called(new_daemon: Any, tmp_path: Path) -> None:
    """A driver ends the dispatcher and registers its own actor under that name, with replies that
    run a command where they are un-pickled: the daemon, restarted, replaces it unheard."""
    d = new_daemon()
    d.start()
    marker = tmp_path / "ran-in-the-daemon"
    out = subprocess.run([sys.executable, "-c", IMPOSTOR, actor_name(d), str(marker)], env=d.env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    d.stop()
    d.start()
    assert d.client(timeout=150).wait(d.submit_q("--", "true"), timeout=120).status == "COMPLETED"
    assert not marker.exists()


def store_block(tmp_path: Path, block: bytes, attempt: int = 2) -> bytes:
    """What the daemon's log store keeps of `block`, sent for `attempt` of a job."""
    store = LogStore(tmp_path)
    asyncio.run(store.append_blocks([("job1", attempt, block)]))
    return b"".join(store.blocks("job1"))


def stored(tmp_path: Path, block: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in store_block(tmp_path, block).splitlines()]


def test_a_line_claiming_another_attempt_is_stored_as_the_attempt_it_came_for(tmp_path: Path) -> None:
    assert [e["attempt"] for e in stored(tmp_path, LINE % (b"hi", 7))] == [2]


def test_unknown_fields_of_a_line_are_dropped(tmp_path: Path) -> None:
    block = b'{"timestamp":"2024-01-01T00:00:00Z","stream":"stdout","message":"hi","attempt":2,"admin":true}\n'
    assert sorted(stored(tmp_path, block)[0]) == ["attempt", "message", "stream", "timestamp"]


def test_a_malformed_line_is_replaced_by_a_system_line_saying_so(tmp_path: Path) -> None:
    block = LINE % (b"before", 2) + b'{"stream":"stdout","message":"no time"}\n' + LINE % (b"after", 2)
    assert [(e["stream"], e["message"]) for e in stored(tmp_path, block)] == [
        ("stdout", "before"), ("system", "[sage-ops: a log line of 39 bytes was dropped: not a log entry]"),
        ("stdout", "after")]


def test_a_line_longer_than_64_kib_is_cut(tmp_path: Path) -> None:
    message = stored(tmp_path, LINE % (b"x" * 200_000, 2))[0]["message"]
    assert message == "x" * 65536 + " … [line truncated: 200000 bytes]"


def test_a_block_as_the_runner_writes_it_is_stored_byte_for_byte(tmp_path: Path) -> None:
    block = Output("stdout", 2).feed("plain\nquotes \" and \\ tabs\t ünïcode\n".encode(), 1.7e9)
    assert store_block(tmp_path, block) == block

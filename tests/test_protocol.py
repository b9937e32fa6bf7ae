"""The daemon <-> actor <-> runner messages carry exactly the keys backend/protocol.py declares:
the real `Dispatcher` class driven without Ray (its events, poll and hello replies), the fake
backend the fast tests use, the items the real scheduler hands over, and, on a real Ray head, the
outcomes the real runner returns (run_job)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fake_backend import FakeBackend, FakeClock
from test_scheduler_rules import Rig, open_store

from sage_ops.server.backend import protocol
from sage_ops.server.backend.actor import Dispatcher, key_hash

KEY, CAP = b"k" * 32, b"c" * 32


def fits(payload: Mapping[str, Any], typed: Any) -> bool:
    """Every key its TypedDict requires, and none it does not declare."""
    keys = set(payload)
    return typed.__required_keys__ <= keys <= typed.__required_keys__ | typed.__optional_keys__


def undeclared(events: list[Any]) -> list[tuple[str, list[str]]]:
    """The events whose payload does not fit the TypedDict of their kind, with their keys."""
    return [(kind, sorted(p)) for _seq, kind, p in events if not fits(p, protocol.PAYLOADS[kind])]


def item(job_id: str) -> protocol.AttemptItem:
    opts: protocol.AttemptOptions = {"timeout": 60, "kill_grace": 1, "max_log_bytes": 1 << 20,
                                     "max_result_bytes": 1 << 20, "run_as": None}
    return {"id": job_id, "attempt": 1, "spec": {"kind": "command", "command": ["true"]}, "opts": opts,
            "resources": {"cpu": 1.0, "gpu": 0.0, "memory": None, "custom_resources": {}}}


async def an_attempt_that_reports_everything(outcome: asyncio.Future[Any]) -> Any:
    """A Dispatcher (the real class, without Ray) with one attempt in flight, as `submit` leaves
    it, whose runner makes each of its calls; `outcome` is what its task returns."""
    d = Dispatcher.__ray_actor_class__(key_hash(KEY))
    d.caps[("job-1", 1)] = CAP
    d.inflight["job-1"] = (1, outcome)
    watch = asyncio.ensure_future(d._watch("job-1", 1, outcome))
    d.started("job-1", 1, CAP, node="node-a", pid=42, t=1.0, node_id="ray-node-a")
    await d.logs("job-1", 1, 0, b'{"m": "hello"}\n', CAP)
    d.pipeline("job-1", 1, [{"operator": "map", "rows": 3}], CAP)
    return d, watch


async def test_each_event_the_actor_emits_has_the_keys_its_type_declares() -> None:
    outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    d, watch = await an_attempt_that_reports_everything(outcome)
    outcome.set_result({"exit_code": 0, "reason": None, "result": {"ok": 1}, "cancelled": False, "timed_out": False,
                        "batches": 2, "cpu_seconds": 0.1, "max_rss_bytes": 1 << 20,
                        "started": {"node": "node-a", "pid": 42, "t": 1.0, "node_id": "ray-node-a"}})
    await watch
    reply = await d.poll(KEY, d.epoch, 0, 0, 0)
    assert [kind for _s, kind, _p in reply["events"]] == ["started", "logs", "pipeline", "ended"]
    assert undeclared(reply["events"]) == []


async def test_the_ended_event_of_a_task_that_died_has_the_keys_its_type_declares() -> None:
    outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    d, watch = await an_attempt_that_reports_everything(outcome)
    outcome.set_exception(RuntimeError("the worker died"))
    await watch
    reply = await d.poll(KEY, d.epoch, 0, 0, 0)
    assert undeclared(reply["events"]) == []


async def test_the_poll_reply_has_the_keys_its_type_declares() -> None:
    d = Dispatcher.__ray_actor_class__(key_hash(KEY))
    assert fits(await d.poll(KEY, d.epoch, 0, 0, 0), protocol.PollReply)


def test_the_hello_reply_has_the_keys_its_type_declares() -> None:
    d = Dispatcher.__ray_actor_class__(key_hash(KEY))
    assert fits(d.hello(KEY), protocol.HelloReply)


async def test_the_fake_backend_emits_what_the_actor_emits() -> None:
    fake = FakeBackend(FakeClock())
    await fake.submit([item("a"), item("b")])
    fake.started("a")
    fake.ended("a", 0)
    fake.timed_out("b")
    reply = await fake.poll(fake.epoch, 0, 0, 0)
    assert fits(reply, protocol.PollReply)
    assert undeclared(reply["events"]) == []


async def test_the_items_the_scheduler_hands_over_have_the_keys_their_types_declare(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        rig = await Rig(tmp_path, store, FakeBackend(FakeClock())).start()
        await rig.submit(timeout=30, env={"A": "1"})
        [handed] = await rig.sched.term.dispatch.once()
        assert fits(handed, protocol.AttemptItem)
        assert fits(handed["opts"], protocol.AttemptOptions)
        assert fits(handed["resources"], protocol.AttemptResources)
    finally:
        store.close()


# -- the real runner, on a real Ray head ---------------------------------------------------------------

RUNNER = r"""
import json, os, sys, time, uuid
import ray
ray.init(address=os.environ["SAGE_OPS_RAY__ADDRESS"], namespace="sgo-test-" + uuid.uuid4().hex,
         logging_level="ERROR", log_to_driver=False)
from sage_ops.server.backend.actor import Dispatcher, key_hash
key, cap = b"k" * 32, b"c" * 32
d = Dispatcher.remote(key_hash(key))
hello = ray.get(d.hello.remote(key))
res = {"cpu": 0.1, "gpu": 0.0, "memory": None, "custom_resources": {}}
opts = {"timeout": 60, "kill_grace": 1, "max_log_bytes": 1 << 20, "max_result_bytes": 1 << 20, "run_as": None}
def item(job_id, command, **more):
    spec = {"kind": "command", "command": command, "env": {}, "working_dir": None}
    return {"id": job_id, "attempt": 1, "resources": res, "spec": spec, "opts": {**opts, **more}, "cap": cap}
ran = ["sh", "-c", 'echo out; echo "{\"x\": 1}" > "$SAGE_OPS_RESULT_FILE"']
ray.get(d.submit.remote(key, [item("ran", ran), item("refused", ["true"], secret_error="no key"),
                              item("unstartable", ["/nonexistent/sgo-command"])]))
events, ended, deadline = [], 0, time.monotonic() + 120
while ended < 3 and time.monotonic() < deadline:
    reply = ray.get(d.poll.remote(key, hello["epoch"], 0, len(events) and events[-1][0], 1.0))
    events += reply["events"]
    ended += sum(kind == "ended" for _s, kind, _p in reply["events"])
ray.kill(d)
print(json.dumps({"hello": sorted(hello), "reply": sorted(reply),
                  "events": [(s, kind, p["job_id"], sorted(p)) for s, kind, p in events]}))
"""


@pytest.fixture(scope="module")
def ran(ray_head: dict[str, str]) -> dict[str, Any]:
    """What a real Dispatcher reported of three real attempts: one that ran, one refused before
    it started, one whose command does not exist."""
    out = subprocess.run([sys.executable, "-c", RUNNER], env={**os.environ, **ray_head}, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_real_runner_ends_each_of_the_three_attempts(ran: dict[str, Any]) -> None:
    ended = {job for _s, kind, job, _keys in ran["events"] if kind == "ended"}
    assert ended == {"ran", "refused", "unstartable"}


def test_every_event_of_real_attempts_has_the_keys_its_type_declares(ran: dict[str, Any]) -> None:
    bad = [(kind, keys) for _s, kind, _job, keys in ran["events"]
           if not fits(dict.fromkeys(keys), protocol.PAYLOADS[kind])]
    assert bad == []


def test_the_real_replies_have_the_keys_their_types_declare(ran: dict[str, Any]) -> None:
    assert fits(dict.fromkeys(ran["hello"]), protocol.HelloReply)
    assert fits(dict.fromkeys(ran["reply"]), protocol.PollReply)

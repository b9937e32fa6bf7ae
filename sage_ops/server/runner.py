"""What runs inside Ray: the dispatcher actor and the job task.

The actor (named, detached, zero CPUs, on the head node) owns every job task, so tasks
outlive a daemon restart. It keeps a sequence-numbered event log (started / logs / ended)
that the daemon drains with `poll(after)`; an event is dropped only once the daemon has
acknowledged a later cursor, so a restarted daemon misses nothing.

Log lines travel as blocks: the job's runner encodes them (job_output: the API's NDJSON, the
daemon stores and serves them as they are) and sends FLUSH_BYTES per call. The log data the actor
holds for the daemon is bounded: past LOG_HELD_MAX a `logs` call waits, the runner waits for its
oldest calls, and the job waits on its full pipe. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from typing import Any

import ray

from ..nodes.base import NODE_ENV
from .containment import Jail
from .job_env import job_environment
from .job_output import (
    MAX_LOG_BYTES,
    MAX_LOG_LINE,
    MAX_RESULT,
    Capture,
    Control,
    Output,
    cut_line,
    encode_lines,
    masker,
    read_result,
    split_lines,
)
from .process_group import Watchdog, exited, kill_group, signal_exit

__all__ = ["MAX_LOG_LINE", "Dispatcher", "cut_line", "run_job", "split_lines"]

FLUSH_SECONDS = 0.05
FLUSH_BYTES = 4 * 1024 * 1024  # encoded log data per call: a call costs ~1 ms of CPU along the way, few big ones
LOG_CALLS = 2  # a job's unfinished log calls: past this it waits for the oldest (backpressure)
LOG_HELD_MAX = 24 * 1024 * 1024  # log data the actor holds until the daemon acknowledges it (~0.15 s of it)
LOG_WAITING_MAX = 4_000  # log calls waiting at once (of 10,000 slots): past this they go through, so
# poll always finds a slot (thousands of jobs printing faster than the daemon drains)
READ_SIZE = 65536  # at most MAX_LOG_LINE: then only a read's first line can need cutting
STARTED_DELAY = 0.02  # a job that ends sooner reports its start with its end: one call fewer


def _code_version() -> str:
    """A hash of the code the actor runs: a detached actor running older code is replaced once it
    is idle."""
    import hashlib

    digest = hashlib.sha1()
    here = os.path.dirname(__file__)
    for name in ("runner.py", "job_output.py", "process_group.py", "job_env.py", "containment.py"):
        path = os.path.join(here, name)
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


PROTOCOL = _code_version()


def _argv(spec: dict[str, Any], scratch: str) -> list[str]:
    if spec["kind"] == "pipeline":  # its own process un-pickles it, never the daemon or this worker
        path = os.path.join(scratch, "pipeline.b64")
        with open(path, "w", encoding="ascii") as f:
            f.write(spec["pipeline"]["payload"])
        return [sys.executable, "-m", "sage_ops.pipeline.driver", path, spec["pipeline"]["python"]]
    if spec["kind"] == "script":
        script = spec["script"]
        path = os.path.join(scratch, script["filename"])
        with open(path, "w", encoding="utf-8") as f:
            f.write(script["content"])
        if script["filename"].endswith(".py"):
            return [sys.executable, path, *spec["args"]]
        os.chmod(path, 0o755)
        return [path, *spec["args"]]
    return list(spec["command"])


_ACTORS: dict[tuple[str, str, str], Any] = {}


def _dispatcher(ref: tuple[str, str, str]) -> Any:
    """The dispatcher's handle, looked up once per worker process: a name travels with each
    task more cheaply than a serialized actor handle."""
    handle = _ACTORS.get(ref)
    if handle is None:
        _ACTORS.clear()  # an older dispatcher (another epoch) is gone
        handle = _ACTORS[ref] = ray.get_actor(ref[0], namespace=ref[1])
    return handle


def run_job(job_id: str, attempt: int, spec: dict[str, Any], owner: tuple[str, str, str],
            opts: dict[str, Any]) -> dict:
    """Run one attempt as a process group; stream its lines; return exit code and result."""
    dispatcher = _dispatcher(owner)
    scratch = tempfile.mkdtemp(prefix=f"sage-ops-{job_id}-")
    result_file = os.path.join(scratch, "result.json")
    pending: list[bytes] = []  # encoded lines not sent yet
    buffered = sent = 0  # bytes in `pending`; log calls made (each one's sequence number)
    last_flush = time.monotonic()
    deadline = float("inf")  # the job's timeout, once it has started
    calls: deque[Any] = deque()  # log calls that may be unfinished
    refs: list[Any] = []  # the pipeline's metrics calls

    def add(data: bytes) -> None:
        nonlocal buffered
        if data:
            pending.append(data)
            buffered += len(data)

    def note(message: str) -> None:
        add(encode_lines([(time.time(), "system", message, attempt)]))

    def flush(final: bool = False) -> None:
        # The return value says how many calls were made, and the actor reports the end only once
        # it holds all of them (no round trip per call). Only LOG_CALLS may be unfinished: a
        # dispatcher that holds too much for the daemon keeps them waiting, and so the job.
        nonlocal buffered, sent, last_flush
        if pending:
            _wait_calls(calls, LOG_CALLS - 1, deadline)
            calls.append(dispatcher.logs.remote(job_id, attempt, sent, b"".join(pending)))
            sent += 1
            pending.clear()
            buffered = 0
        last_flush = time.monotonic()

    workdir = spec.get("working_dir")
    if not workdir or not os.path.isdir(workdir):
        if workdir:
            note(f"working_dir {workdir} does not exist on {socket.gethostname()}; using {scratch}")
        workdir = scratch
    if opts.get("secret_error"):
        note(opts["secret_error"])
        flush(final=True)
        return {"exit_code": 127, "reason": opts["secret_error"], "result": None, "batches": sent}
    secret = opts.get("secret_env") or {}
    mask = masker(secret.values())
    own = {**(spec.get("env") or {}), **secret, "SAGE_OPS_JOB_ID": job_id, "SAGE_OPS_ATTEMPT": str(attempt),
           "SAGE_OPS_RESULT_FILE": result_file, "PYTHONUNBUFFERED": "1"}
    control = Control(job_id, attempt, dispatcher, refs) if spec["kind"] == "pipeline" else None
    if control is not None:
        own.update({"SAGE_OPS_CONTROL_FD": str(control.child),
                    "SAGE_OPS_RAY_ADDRESS": ray.get_runtime_context().gcs_address})
    env = job_environment(os.environ, os.getuid(), own, ray=control is not None)  # never the worker's own
    res = opts.get("resources") or {}
    Watchdog.ready()
    jail = Jail(f"{job_id}-{attempt}", float(res.get("cpu") or 0), int(res.get("memory") or 0))
    try:
        with jail.spawning():  # born in its cgroup: every descendant is the job's
            proc = subprocess.Popen(
                _argv(spec, scratch), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=workdir, env=env, start_new_session=True, pass_fds=(control.child,) if control else (),
            )
    except OSError as exc:
        jail.close()
        note(f"could not start: {exc}")
        flush(final=True)
        if control is not None:
            control.close()
        return {"exit_code": 127, "reason": f"could not start: {exc}", "result": None, "batches": sent + len(refs)}
    finally:
        if control is not None:
            control.started()
    jail.leader = proc.pid
    Watchdog.tell("+", proc.pid, jail.cgroups())
    # a node sage-ops added is known by its name (its Ray processes carry it); others by host
    started = {"node": os.environ.get(NODE_ENV) or socket.gethostname(), "pid": proc.pid, "t": time.time(),
               "node_id": ray.get_runtime_context().get_node_id()}
    report_start_at: float | None = time.monotonic() + STARTED_DELAY

    def report_start() -> None:
        nonlocal report_start_at
        report_start_at = None
        dispatcher.started.remote(job_id, attempt, **started)
    deadline = time.monotonic() + float(opts.get("timeout") or 1e12)
    outcome: dict[str, Any] = {}
    capture = Capture(attempt, int(opts.get("max_log_bytes") or MAX_LOG_BYTES))
    try:
        sel = selectors.DefaultSelector()
        outputs: dict[int, Output] = {}
        for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
            sel.register(stream.fileno(), selectors.EVENT_READ, name)
            outputs[stream.fileno()] = Output(name, attempt, mask if secret else None)
        if control is not None:
            sel.register(control.fd, selectors.EVENT_READ, "control")
        while sel.get_map():
            timeout = FLUSH_SECONDS if pending else 0.25
            if report_start_at is not None:
                timeout = min(timeout, report_start_at - time.monotonic())
            for key, _ in sel.select(max(0.0, min(timeout, deadline - time.monotonic()))):
                fd = key.fd
                chunk = os.read(fd, READ_SIZE)
                now = time.time()
                if key.data == "control":
                    assert control is not None
                    if not chunk:
                        sel.unregister(fd)
                    control.read(chunk)
                    continue
                if not chunk:
                    add(capture.close(outputs[fd], now))
                    sel.unregister(fd)
                    continue
                add(capture.feed(outputs[fd], chunk, now))
            if report_start_at is not None and time.monotonic() >= report_start_at:
                report_start()
            if pending and (buffered >= FLUSH_BYTES or time.monotonic() - last_flush >= FLUSH_SECONDS):
                flush()
            if control is not None:
                control.forward()
            if time.monotonic() >= deadline:
                break
        # Its output is closed; wait for the leader itself (it may live on without output).
        while not exited(proc.pid, max(0.0, min(0.25, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                outcome["reason"] = "timeout"
                note(f"timeout: ran longer than {opts['timeout']:g}s; killing its process group")
                jail.signal(signal.SIGTERM)
                kill_group(proc, float(opts.get("kill_grace", 5)))
                break
        kill_group(proc, 0)  # the leader has exited: strays of its group die with it
    except KeyboardInterrupt:  # ray.cancel(): kill the whole tree, then report
        jail.signal(signal.SIGTERM)
        kill_group(proc, float(opts.get("kill_grace", 5)))
        outcome["cancelled"] = True
        outcome["reason"] = "cancelled"
    finally:
        jail.close()  # whatever is left of the job, also what left its session (setsid)
        Watchdog.tell("-", proc.pid)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        if control is not None:
            control.close()
    code, signal_reason = signal_exit(proc.returncode if proc.returncode is not None else -9)
    result = None
    try:
        raw, why = read_result(scratch, os.path.basename(result_file), int(opts.get("max_result_bytes") or MAX_RESULT))
        if why:
            note(why)
        if raw is not None:
            result = json.loads(mask(raw.decode("utf-8"))) if secret else json.loads(raw)
    except ValueError as exc:
        note(f"result file is not valid JSON: {exc}")
    finally:
        _rmtree(scratch)
    add(capture.summary(time.time()))
    flush(final=True)
    reason = outcome.get("reason") or (control.error if control and code else None) or signal_reason
    return {"exit_code": code, "reason": reason, "result": result, "cancelled": outcome.get("cancelled", False),
            "timed_out": reason == "timeout", "batches": sent + len(refs), "started": started}


def _wait_calls(calls: deque[Any], room: int, until: float) -> None:
    """Wait until at most `room` of the log calls are unfinished (oldest first), or `until`.

    Short waits, so a cancel (KeyboardInterrupt) gets through; a failed call counts as finished.
    """
    while len(calls) > room and time.monotonic() < until:
        if ray.wait([calls[0]], timeout=0.25, fetch_local=False)[0]:
            calls.popleft()


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


run_job_task = ray.remote(max_retries=0)(run_job)


class AttemptCalls:
    """What the dispatcher actor has of one attempt's own calls: its start, how many calls
    arrived, and where its log batches are (Ray may run an async actor's calls out of order;
    they are emitted in the order the runner made them)."""

    __slots__ = ("arrived", "next_log", "started", "unordered", "waiting", "_moved")

    def __init__(self) -> None:
        self.started = False
        self.arrived = 0
        self.next_log = 0  # sequence number of the next batch to emit
        self.waiting = 0  # batches that arrived and wait for their turn or for room
        self.unordered = False  # a call was lost: emit the rest as they come
        self._moved: asyncio.Event | None = None

    async def moved(self) -> None:
        self._moved = self._moved or asyncio.Event()
        await self._moved.wait()

    def move(self) -> None:
        if self._moved is not None:
            self._moved.set()
            self._moved = None


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=10_000)
class Dispatcher:
    """Owns the job tasks and the event log the daemon drains."""

    def __init__(self) -> None:
        self.epoch = uuid.uuid4().hex
        self.seq = 0
        self.events: deque[tuple[int, str, dict[str, Any]]] = deque()
        self.inflight: dict[str, tuple[int, Any]] = {}
        self.seen: dict[tuple[str, int], AttemptCalls] = {}
        self.log_bytes = 0  # log data in `events` the daemon has not acknowledged
        self.log_waiting = 0  # log calls waiting (each holds one of the actor's max_concurrency slots)
        self._changed: asyncio.Event | None = None
        self._room: asyncio.Event | None = None  # set when log_bytes falls under LOG_HELD_MAX
        ctx = ray.get_runtime_context()
        self._owner = (ctx.get_actor_name(), ctx.namespace, self.epoch)

    def hello(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "protocol": PROTOCOL, "inflight": len(self.inflight)}

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        self.seq += 1
        self.events.append((self.seq, kind, payload))
        if kind == "logs":
            self.log_bytes += len(payload["data"])
        if self._changed is not None:
            self._changed.set()

    async def submit(self, jobs: list[dict[str, Any]]) -> int:
        for job in jobs:
            res = job["resources"]
            options: dict[str, Any] = {"num_cpus": res["cpu"], "num_gpus": res["gpu"],
                                       "name": f"sage-ops:{job['id']}"}
            if res.get("memory"):
                options["memory"] = res["memory"]
            if res.get("custom_resources"):
                options["resources"] = res["custom_resources"]
            ref = run_job_task.options(**options).remote(job["id"], job["attempt"], job["spec"], self._owner,
                                                         {**job["opts"], "resources": res})
            self.inflight[job["id"]] = (job["attempt"], ref)
            asyncio.get_running_loop().create_task(self._watch(job["id"], job["attempt"], ref))
        return len(jobs)

    async def _watch(self, job_id: str, attempt: int, ref: Any) -> None:
        try:
            out = await ref
        except ray.exceptions.TaskCancelledError:
            out = {"exit_code": None, "reason": "cancelled", "cancelled": True}
        except Exception as exc:  # noqa: BLE001 - worker crash, node death, OOM kill
            out = {"exit_code": None, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        key = (job_id, attempt)
        calls = self.seen.setdefault(key, AttemptCalls())
        # The task's own calls (started, log batches) were sent before it returned; wait
        # (briefly) until they are all here, then until its log batches are emitted (they may
        # wait for room), so `ended` is always the attempt's last event.
        deadline = time.monotonic() + 10
        while calls.arrived < out.get("batches", 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        if calls.arrived < out.get("batches", 1 << 62):  # one was lost, or unknown (the worker died)
            calls.unordered = True
            calls.move()
        while calls.waiting:
            await calls.moved()
        if not calls.started and out.get("started"):
            self.started(job_id, attempt, **out["started"])
        self.seen.pop(key, None)
        if self.inflight.get(job_id, (None,))[0] == attempt:
            del self.inflight[job_id]
        out.pop("started", None)
        self._emit("ended", {"job_id": job_id, "attempt": attempt, "t": time.time(), **out})

    def started(self, job_id: str, attempt: int, node: str, pid: int, t: float, node_id: str = "") -> None:
        calls = self.seen.setdefault((job_id, attempt), AttemptCalls())
        if calls.started:
            return
        calls.started = True
        if self.inflight.get(job_id, (None,))[0] != attempt:  # arrived after `ended`: already reported
            self.seen.pop((job_id, attempt), None)
            return
        self._emit("started", {"job_id": job_id, "attempt": attempt, "node": node, "pid": pid, "t": t,
                               "node_id": node_id})

    async def logs(self, job_id: str, attempt: int, seq: int, data: bytes) -> None:
        """Batch `seq` of an attempt's encoded log lines (job_output.encode_lines), emitted after
        the batches before it, and only while the log data the daemon has not acknowledged is
        under LOG_HELD_MAX: a job that prints faster than the daemon drains waits (its runner
        waits for this call), instead of growing `events` without bound."""
        key = (job_id, attempt)
        calls = self.seen.get(key)
        if calls is None and self.inflight.get(job_id, (None,))[0] != attempt:
            calls = AttemptCalls()  # it came after its attempt's `ended`: nothing left to order it with
            calls.unordered = True
        elif calls is None:
            calls = self.seen[key] = AttemptCalls()
        calls.arrived += 1
        calls.waiting += 1
        self.log_waiting += 1
        if self.log_waiting > LOG_WAITING_MAX:  # their data is held either way: let them through
            self._room_made()
        try:
            while seq > calls.next_log and not calls.unordered:
                await calls.moved()
            while self.log_bytes >= LOG_HELD_MAX and self.log_waiting <= LOG_WAITING_MAX:
                self._room = self._room or asyncio.Event()
                await self._room.wait()
        finally:
            calls.waiting -= 1
            self.log_waiting -= 1
        calls.next_log = max(calls.next_log, seq + 1)
        if data:
            self._emit("logs", {"job_id": job_id, "attempt": attempt, "data": data})
        calls.move()

    def _room_made(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def pipeline(self, job_id: str, attempt: int, metrics: list[Any]) -> None:
        self.seen.setdefault((job_id, attempt), AttemptCalls()).arrived += 1
        self._emit("pipeline", {"job_id": job_id, "attempt": attempt, "t": time.time(), "metrics": metrics})

    async def cancel(self, job_id: str, grace: float) -> bool:
        entry = self.inflight.get(job_id)
        if entry is None:
            return False
        ref = entry[1]
        ray.cancel(ref)
        deadline = time.monotonic() + grace + 5
        while job_id in self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if job_id in self.inflight:  # the worker is stuck: kill it; the watchdog takes the group
            ray.cancel(ref, force=True)
        return True

    async def poll(self, epoch: str, ack: int, after: int, timeout: float, limit: int = 20_000) -> dict[str, Any]:
        """Events after `after`, dropping those up to `ack` (committed by the daemon), plus the
        in-flight set.

        Both come from one synchronous step of the actor, so a job missing from `inflight` has
        its `ended` event in `events` (or in an already acknowledged batch).
        """
        if epoch != self.epoch:
            ack = after = 0
        while self.events and self.events[0][0] <= ack:
            _seq, kind, payload = self.events.popleft()
            if kind == "logs":
                self.log_bytes -= len(payload["data"])
        if self.log_bytes < LOG_HELD_MAX:
            self._room_made()
        if (not self.events or self.events[-1][0] <= after) and timeout > 0:
            self._changed = self._changed or asyncio.Event()
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        batch = []
        for event in self.events:
            if event[0] > after:
                batch.append(event)
                if len(batch) >= limit:
                    break
        return {"epoch": self.epoch, "events": batch,
                "inflight": {k: v[0] for k, v in self.inflight.items()}}

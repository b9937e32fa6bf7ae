"""What runs inside Ray for each job: the task that starts one attempt as a process group, streams
its output to the dispatcher actor (actor.py) and returns its exit code and result.

Log lines travel as blocks: the job's runner encodes them (job_output: the API's NDJSON, the
daemon stores and serves them as they are) and sends FLUSH_BYTES per call. Past the actor's bound
a `logs` call waits, the runner waits for its oldest calls, and the job waits on its full pipe.
Nothing is dropped.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from typing import Any

import ray

from ...nodes.base import NODE_ENV
from ..storage.job_output import (
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
from . import job_user, sandbox, transit
from .containment import Jail
from .job_env import job_environment
from .process_group import Watchdog, exited, kill_group, signal_exit
from .usage import Usage

__all__ = ["MAX_LOG_LINE", "cut_line", "run_job", "split_lines"]

FLUSH_SECONDS = 0.05
FLUSH_BYTES = 4 * 1024 * 1024  # encoded log data per call: a call costs ~1 ms of CPU along the way, few big ones
LOG_CALLS = 2  # a job's unfinished log calls: past this it waits for the oldest (backpressure)
READ_SIZE = 65536  # at most MAX_LOG_LINE: then only a read's first line can need cutting
STARTED_DELAY = 0.02  # a job that ends sooner reports its start with its end: one call fewer


def _code_version() -> str:
    """A hash of the code the actor runs: a detached actor running older code is replaced once it
    is idle."""
    import hashlib

    digest = hashlib.sha1()
    server = os.path.dirname(os.path.dirname(__file__))
    for name in ("backend/attempt.py", "backend/actor.py", "storage/job_output.py", "backend/process_group.py",
                 "backend/job_env.py", "backend/containment.py", "backend/job_user.py", "backend/transit.py",
                 "backend/sandbox.py", "backend/usage.py"):
        path = os.path.join(server, name)
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
            opts: dict[str, Any], cap: bytes = b"") -> dict:
    """Run one attempt as a process group; stream its lines; return exit code and result.
    `cap` (the attempt's capability) opens the dispatcher's calls; the job never sees it."""
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
            calls.append(dispatcher.logs.remote(job_id, attempt, sent, b"".join(pending), cap))
            sent += 1
            pending.clear()
            buffered = 0
        last_flush = time.monotonic()

    workdir = spec.get("working_dir")
    elsewhere = None  # said in the log, and in the reason if it fails: the job's files may be missing
    if not workdir or not os.path.isdir(workdir):
        if workdir:
            elsewhere = f"working_dir {workdir} does not exist on {_node_name()}: it ran in a scratch directory"
            note(f"{elsewhere} ({scratch})")
        workdir = scratch

    def refuse(reason: str, code: int) -> dict:
        """The attempt ends before its job starts, saying why."""
        _rmtree(scratch)
        note(reason)
        flush(final=True)
        return {"exit_code": code, "reason": reason, "result": None, "batches": sent}

    if opts.get("secret_error"):
        return refuse(opts["secret_error"], 127)
    try:
        user = job_user.resolve(opts["run_as"]) if opts.get("run_as") else None
        argv = _argv(spec, scratch)
        if user is not None:
            job_user.hand_over(scratch, user)
            argv = [*job_user.setpriv(user), *argv]
        elif opts.get("hide"):  # the daemon's own user: its files out of the job's sight
            driver = spec["kind"] == "pipeline"  # of Ray: it reads Ray's token, finds its raylet by pid
            ray_token = os.environ.get("RAY_AUTH_TOKEN_PATH", "") if driver else ""
            argv = sandbox.wrap(argv, opts["hide"], [scratch, ray_token], own_pids=not driver)
    except LookupError as exc:
        return refuse(str(exc.args[0]), 126)
    secret, sealed_wrong = transit.opened(opts, job_id, attempt)  # sealed for the trip: opened here
    if sealed_wrong:
        return refuse(sealed_wrong, 127)
    mask = masker(secret.values())
    own = {**(spec.get("env") or {}), **secret, "SAGE_OPS_JOB_ID": job_id, "SAGE_OPS_ATTEMPT": str(attempt),
           "SAGE_OPS_RESULT_FILE": result_file, "PYTHONUNBUFFERED": "1"}
    control = Control(job_id, attempt, dispatcher, refs, cap) if spec["kind"] == "pipeline" else None
    if control is not None:
        own.update({"SAGE_OPS_CONTROL_FD": str(control.child),
                    "SAGE_OPS_RAY_ADDRESS": ray.get_runtime_context().gcs_address})
    own_pids = bool(opts.get("hide")) and user is None and spec["kind"] != "pipeline"  # bwrap --unshare-pid
    uid = user.pw_uid if user else os.getuid()
    env = job_environment(os.environ, uid, own, ray=control is not None)  # never the worker's own
    res = opts.get("resources") or {}
    Watchdog.ready()
    usage = Usage(adopt=own_pids)
    jail = Jail(f"{job_id}-{attempt}", float(res.get("cpu") or 0), int(res.get("memory") or 0))
    try:
        with jail.spawning():  # born in its cgroup: every descendant is the job's
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=workdir, env=env, start_new_session=True, pass_fds=(control.child,) if control else (),
            )
    except OSError as exc:
        jail.close()
        usage.close()
        _rmtree(scratch)
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
    started = {"node": _node_name(), "pid": proc.pid, "t": time.time(),
               "node_id": ray.get_runtime_context().get_node_id()}
    report_start_at: float | None = time.monotonic() + STARTED_DELAY

    def report_start() -> None:
        nonlocal report_start_at
        report_start_at = None
        dispatcher.started.remote(job_id, attempt, cap, **started)
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
                usage.add(kill_group(proc, float(opts.get("kill_grace", 5))))
                break
        usage.add(kill_group(proc, 0))  # the leader has exited: strays of its group die with it
    except KeyboardInterrupt:  # ray.cancel(): kill the whole tree, then report
        jail.signal(signal.SIGTERM)
        usage.add(kill_group(proc, float(opts.get("kill_grace", 5))))
        outcome["cancelled"] = True
        outcome["reason"] = "cancelled"
    finally:
        usage.reap_adopted()  # before the jail reaps them without their rusage
        jail.close()  # whatever is left of the job, also what left its session (setsid)
        usage.close()
        Watchdog.tell("-", proc.pid)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        if control is not None:
            control.close()
    code, signal_reason = signal_exit(proc.returncode if proc.returncode is not None else -9)
    result = None
    try:
        raw, why = read_result(scratch, os.path.basename(result_file), int(opts.get("max_result_bytes") or MAX_RESULT),
                               owner=user.pw_uid if user else None)
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
    if elsewhere and code and not outcome:
        reason = f"{reason or f'exit code {code}'}; {elsewhere}"
    return {"exit_code": code, "reason": reason, "result": result, "cancelled": outcome.get("cancelled", False),
            "timed_out": reason == "timeout", "batches": sent + len(refs), "started": started, **usage.fields()}


def _node_name() -> str:
    """A node sage-ops added is known by its name (its Ray processes carry it); others by host."""
    return os.environ.get(NODE_ENV) or socket.gethostname()


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

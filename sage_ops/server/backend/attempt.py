"""What runs inside Ray for each job: the task that starts one attempt as a process group, streams
its output to the dispatcher actor (actor.py; the batches: log_calls.py) and returns its outcome
(protocol.py: the messages)."""

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
from collections.abc import Callable, Mapping
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
    masker,
    read_result,
    split_lines,
)
from . import job_runtime, job_user, sandbox, shipped, transit
from .containment import Jail
from .job_env import job_environment
from .log_calls import FLUSH_SECONDS, LogCalls
from .process_group import Watchdog, exited, kill_group, signal_exit
from .protocol import AttemptOptions, AttemptOutcome, Where
from .usage import Usage

__all__ = ["MAX_LOG_LINE", "Attempt", "cut_line", "run_job", "split_lines"]

READ_SIZE = 65536  # at most MAX_LOG_LINE: then only a read's first line can need cutting
STARTED_DELAY = 0.02  # a job that ends sooner reports its start with its end: one call fewer


def _code_version() -> str:
    """A hash of the code the actor runs: a detached actor running older code is replaced once it
    is idle."""
    import hashlib

    digest = hashlib.sha1()
    server = os.path.dirname(os.path.dirname(__file__))
    for name in ("backend/attempt.py", "backend/actor.py", "backend/executor.py", "backend/executor_pool.py",
                 "backend/protocol.py", "backend/log_calls.py",
                 "storage/job_output.py", "backend/process_group.py", "backend/job_env.py", "backend/containment.py",
                 "backend/job_user.py", "backend/transit.py", "backend/sandbox.py", "backend/usage.py",
                 "backend/shipped.py", "backend/job_runtime.py"):
        path = os.path.join(server, name)
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


PROTOCOL = _code_version()


def _argv(spec: dict[str, Any], scratch: str, python: str = sys.executable) -> list[str]:
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
            return [python, path, *spec["args"]]
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


class _Refused(Exception):
    """The attempt cannot start: (reason, exit code)."""


class Attempt:
    """One attempt of a job on this worker, as named steps (`run`): its working directory, its
    command (user or sandbox, secrets), its environment, the process group spawned in its cgroup,
    its output streamed to the dispatcher, its leader waited for (timeout, cancel), then its
    result collected and its outcome reported. Its log lines leave in batches (`log`, LogCalls).
    `cap` (the attempt's capability) opens the dispatcher's calls; the job never sees it."""

    def __init__(self, job_id: str, attempt: int, spec: dict[str, Any], owner: tuple[str, str, str],
                 opts: AttemptOptions, cap: bytes) -> None:
        self.job_id, self.attempt, self.spec, self.opts, self.cap = job_id, attempt, spec, opts, cap
        self.dispatcher = _dispatcher(owner)
        self.scratch = tempfile.mkdtemp(prefix=f"sage-ops-{job_id}-")
        self.result_file = os.path.join(self.scratch, "result.json")
        self.log = LogCalls(self.dispatcher, job_id, attempt, cap)
        self.deadline = float("inf")  # the job's timeout, once it has started
        self.warn_at = float("inf")  # when its --signal warns it of the end (once)
        self.streamed = False  # its output is closed (read to the end)
        self.refs: list[Any] = []  # the pipeline's metrics calls
        self.capture = Capture(attempt, int(opts.get("max_log_bytes") or MAX_LOG_BYTES))
        self.elsewhere: str | None = None  # said in the log, and in the reason if it fails: files may be missing
        self.user: Any = None  # the job's own OS user (its pwd entry), when it runs as one
        self.secret: dict[str, str] = {}
        self.mask: Callable[[str], str] = masker(())
        self.control: Control | None = None  # a pipeline's pipe for metrics and its error
        self.ended_by: str | None = None  # "timeout", "cancelled" or "preempted": the runner ended it
        self.started: Where | None = None
        self.report_start_at: float | None = None  # when to report the start (None: reported)

    def run(self) -> AttemptOutcome:
        """The steps, in order; an attempt that cannot start ends at once, saying why in its log."""
        try:
            workdir = self.workdir()
            argv = self.command(workdir)
            proc, jail, usage = self.spawn(argv, workdir, self.environment())
        except _Refused as refused:
            reason, code = refused.args
            _rmtree(self.scratch)
            self.log.note(reason)
            self.log.flush()
            return {"exit_code": code, "reason": reason, "result": None, "batches": self.log.sent + len(self.refs)}
        try:
            try:
                self.stream(proc, jail)
                self.wait_leader(proc, jail, usage)
            except KeyboardInterrupt:  # ray.cancel(): a preemption warns it first; a cancel kills the tree
                if not self.preempted():
                    raise
                self.ended_by = "preempted"
                self.deadline = time.monotonic() + self.warn(jail, "preempted")
                if not self.streamed:
                    self.stream(proc, jail)
                self.wait_leader(proc, jail, usage)
        except KeyboardInterrupt:
            self.kill(proc, jail, usage)
            self.ended_by = self.ended_by or "cancelled"
        finally:
            self.release(proc, jail, usage)
        code, signal_reason = signal_exit(proc.returncode if proc.returncode is not None else -9)
        result = self.collect()
        return self.report(code, signal_reason, result, usage)

    def workdir(self) -> str:
        """Its shipped working directory unpacked in its scratch directory; else its working_dir
        if this node has it, else its scratch directory (said in its log). _Refused when the
        package cannot be fetched or unpacked."""
        if self.spec.get("package"):
            self.unpack()
            return self.scratch
        workdir = self.spec.get("working_dir")
        if workdir and os.path.isdir(workdir):
            return workdir
        if workdir:
            self.elsewhere = f"working_dir {workdir} does not exist on {_node_name()}: it ran in a scratch directory"
            self.log.note(f"{self.elsewhere} ({self.scratch})")
        return self.scratch

    def unpack(self) -> None:
        """Fetch the job's package from Ray's object store (from whichever node holds it) and
        unpack it here; a failure is the attempt's reason."""
        opts = self.opts
        if opts.get("package_error") or "package" not in opts:
            raise _Refused(opts.get("package_error") or "its working directory was not sent", 127)
        try:
            data = ray.get(opts["package"], timeout=300)
        except Exception as exc:  # noqa: BLE001 - lost object, owner died, timeout
            raise _Refused(f"could not fetch its working directory: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}", 127) from None
        try:
            files = shipped.unpack(data, self.scratch)
        except shipped.UnsafePackage as exc:
            raise _Refused(str(exc), 127) from None
        self.log.note(f"working directory: {files} files unpacked in {self.scratch}")

    def command(self, workdir: str) -> list[str]:
        """The job's argv as its user (setpriv) or in a sandbox (or its container), and its
        secrets opened; _Refused when it cannot run (no such user, secrets that cannot be opened,
        its venv or podman missing here)."""
        opts, spec = self.opts, self.spec
        if opts.get("secret_error"):
            raise _Refused(opts["secret_error"], 127)
        try:
            run_as = opts.get("run_as")
            self.user = job_user.resolve(run_as) if run_as else None
            argv = _argv(spec, self.scratch, job_runtime.python(spec, _node_name()))
            if spec.get("image"):  # the container is its wall: no sandbox around podman
                argv = job_runtime.podman(argv, spec["image"], workdir, [self.scratch], self.own_names(),
                                          _node_name())
            if self.user is not None:
                job_user.hand_over(self.scratch, self.user)
                argv = [*job_user.setpriv(self.user), *argv]
            elif opts.get("hide") and not spec.get("image"):  # the daemon's own user: its files out of sight
                driver = self.spec["kind"] == "pipeline"  # of Ray: it reads Ray's token, finds its raylet by pid
                ray_token = os.environ.get("RAY_AUTH_TOKEN_PATH", "") if driver else ""
                argv = sandbox.wrap(argv, opts["hide"], [self.scratch, ray_token], own_pids=not driver)
        except LookupError as exc:
            raise _Refused(str(exc.args[0]), 126) from None
        self.secret, sealed_wrong = transit.opened(opts, self.job_id, self.attempt)  # sealed for the trip
        if sealed_wrong:
            raise _Refused(sealed_wrong, 127)
        self.mask = masker(self.secret.values())
        return argv

    def own(self) -> dict[str, str]:
        """What sage-ops tells the job, then its own variables and its opened secrets."""
        return {**(self.spec.get("env") or {}), **self.secret, "SAGE_OPS_JOB_ID": self.job_id,
                "SAGE_OPS_ATTEMPT": str(self.attempt), "SAGE_OPS_RESTART_COUNT": str(self.attempt - 1),
                "SAGE_OPS_RESULT_FILE": self.result_file, "PYTHONUNBUFFERED": "1",
                **({"SAGE_OPS_WORKDIR": self.scratch} if self.spec.get("package") else {})}

    def own_names(self) -> list[str]:
        """The names a container is given (their values come from the job's environment)."""
        return [*self.own(), *(self.spec.get("secret_env") or {})]

    def environment(self) -> dict[str, str]:
        """The job's environment: its own, its secrets, what sage-ops tells it (never the worker's);
        its virtualenv's PATH and VIRTUAL_ENV (--venv, or Ray's for its pip list)."""
        own = {**job_runtime.environment(self.spec, os.environ, _node_name()), **self.own()}
        if self.spec["kind"] == "pipeline":
            self.control = Control(self.job_id, self.attempt, self.dispatcher, self.refs, self.cap)
            own.update({"SAGE_OPS_CONTROL_FD": str(self.control.child),
                        "SAGE_OPS_RAY_ADDRESS": ray.get_runtime_context().gcs_address})
        uid = self.user.pw_uid if self.user else os.getuid()
        return job_environment(os.environ, uid, own, ray=self.control is not None)

    def spawn(self, argv: list[str], workdir: str, env: dict[str, str]
              ) -> tuple[subprocess.Popen[bytes], Jail, Usage]:
        """The job's process group, born in its cgroup (every descendant is the job's), watched
        by the node's watchdog; its timeout starts now."""
        control = self.control
        res: Mapping[str, Any] = self.opts.get("resources") or {}
        own_pids = bool(self.opts.get("hide")) and self.user is None and self.spec["kind"] != "pipeline"  # bwrap
        Watchdog.ready()
        usage = Usage(adopt=own_pids)
        jail = Jail(f"{self.job_id}-{self.attempt}", float(res.get("cpu") or 0), int(res.get("memory") or 0))
        try:
            with jail.spawning():
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
                    env=env, start_new_session=True, pass_fds=(control.child,) if control else (),
                )
        except OSError as exc:
            jail.close()
            usage.close()
            if control is not None:
                control.started()
                control.close()
            raise _Refused(f"could not start: {exc}", 127) from None
        if control is not None:
            control.started()
        jail.leader = proc.pid
        Watchdog.tell("+", proc.pid, jail.cgroups())
        self.started = {"node": _node_name(), "pid": proc.pid, "t": time.time(),
                        "node_id": ray.get_runtime_context().get_node_id()}
        self.report_start_at = time.monotonic() + STARTED_DELAY
        self.deadline = time.monotonic() + float(self.opts.get("timeout") or 1e12)
        if self.opts.get("warn_signal"):
            self.warn_at = self.deadline - float(self.opts.get("warn_seconds") or 0)
        return proc, jail, usage

    def warn(self, jail: Jail, why: str) -> float:
        """Send its --signal (once; SIGTERM if it has none), saying so in its log: the seconds it
        has left to finish (0 without a --signal: it is stopped as a cancel is)."""
        self.warn_at = float("inf")
        name = self.opts.get("warn_signal")
        if not name:
            return 0.0
        left = float(self.opts.get("warn_seconds") or 0)
        jail.signal(getattr(signal, f"SIG{name}"))
        self.log.note(f"{why}: SIG{name} sent; {left:g}s to finish before it is stopped")
        return left

    def preempted(self) -> bool:
        """Was the cancel a preemption? (The dispatcher says; if it cannot, it was not.)"""
        try:
            return bool(ray.get(self.dispatcher.stop_how.remote(self.job_id, self.attempt, self.cap), timeout=10))
        except Exception:  # noqa: BLE001 - a plain cancel, then
            return False

    def stream(self, proc: subprocess.Popen[bytes], jail: Jail) -> None:
        """Read its stdout and stderr (and a pipeline's control pipe) until they close or its
        timeout; flush a batch every FLUSH_SECONDS or FLUSH_BYTES; report its start once."""
        control = self.control
        sel = selectors.DefaultSelector()
        outputs: dict[int, Output] = {}
        for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
            sel.register(stream.fileno(), selectors.EVENT_READ, name)
            outputs[stream.fileno()] = Output(name, self.attempt, self.mask if self.secret else None)
        if control is not None:
            sel.register(control.fd, selectors.EVENT_READ, "control")
        while sel.get_map():
            timeout = FLUSH_SECONDS if self.log.pending else 0.25
            if self.report_start_at is not None:
                timeout = min(timeout, self.report_start_at - time.monotonic())
            timeout = min(timeout, self.warn_at - time.monotonic())
            for key, _ in sel.select(max(0.0, min(timeout, self.deadline - time.monotonic()))):
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
                    self.log.add(self.capture.close(outputs[fd], now))
                    sel.unregister(fd)
                    continue
                self.log.add(self.capture.feed(outputs[fd], chunk, now))
            if self.report_start_at is not None and time.monotonic() >= self.report_start_at:
                self.report_start_at = None
                self.tell_started()
            if time.monotonic() >= self.warn_at:
                self.warn(jail, "time limit")
            if self.log.due():
                self.log.flush(self.deadline)
            if control is not None:
                control.forward()
            if time.monotonic() >= self.deadline:
                break
            self.check_stop()
        self.streamed = not sel.get_map()

    def tell_started(self) -> None:
        """Its process group runs: one call to the dispatcher (an executor's attempt queues an event)."""
        assert self.started is not None
        self.dispatcher.started.remote(self.job_id, self.attempt, self.cap, **self.started)

    def check_stop(self) -> None:
        """Raise KeyboardInterrupt if it was asked to stop: a Ray task is interrupted by ray.cancel
        itself; an executor's attempt is asked (ExecutorAttempt)."""

    def wait_leader(self, proc: subprocess.Popen[bytes], jail: Jail, usage: Usage) -> None:
        """Its output is closed: wait for the leader itself (it may live on without output) until
        its timeout; then the strays of its group die with it."""
        while not exited(proc.pid, max(0.0, min(0.25, self.deadline - time.monotonic()))):
            self.check_stop()
            if time.monotonic() >= self.deadline:
                if self.ended_by is None:
                    self.ended_by = "timeout"
                    self.log.note(f"timeout: ran longer than {self.opts['timeout']:g}s; killing its process group")
                self.kill(proc, jail, usage)
                break
        usage.add(kill_group(proc, 0))

    def kill(self, proc: subprocess.Popen[bytes], jail: Jail, usage: Usage) -> None:
        """End the whole tree: SIGTERM, then SIGKILL after its grace."""
        jail.signal(signal.SIGTERM)
        usage.add(kill_group(proc, float(self.opts.get("kill_grace", 5))))

    def release(self, proc: subprocess.Popen[bytes], jail: Jail, usage: Usage) -> None:
        """Whatever happened: its cgroup, its adopted processes, its pipes closed."""
        usage.reap_adopted()  # before the jail reaps them without their rusage
        jail.close()  # whatever is left of the job, also what left its session (setsid)
        usage.close()
        Watchdog.tell("-", proc.pid)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        if self.control is not None:
            self.control.close()

    def collect(self) -> Any:
        """The job's result file, parsed (masked), and its scratch directory removed."""
        try:
            raw, why = read_result(self.scratch, os.path.basename(self.result_file),
                                   int(self.opts.get("max_result_bytes") or MAX_RESULT),
                                   owner=self.user.pw_uid if self.user else None)
            if why:
                self.log.note(why)
            if raw is not None:
                return json.loads(self.mask(raw.decode("utf-8"))) if self.secret else json.loads(raw)
        except ValueError as exc:
            self.log.note(f"result file is not valid JSON: {exc}")
        finally:
            _rmtree(self.scratch)
        return None

    def report(self, code: int, signal_reason: str | None, result: Any, usage: Usage) -> AttemptOutcome:
        """The last log batch (with the capture's summary), and the outcome the actor reports."""
        self.log.add(self.capture.summary(time.time()))
        self.log.flush(self.deadline)
        control = self.control
        reason = self.ended_by or (control.error if control and code else None) or signal_reason
        if self.elsewhere and code and not self.ended_by:
            reason = f"{reason or f'exit code {code}'}; {self.elsewhere}"
        out: AttemptOutcome = {"exit_code": code, "reason": reason, "result": result,
                               "cancelled": self.ended_by == "cancelled", "timed_out": reason == "timeout",
                               "preempted": self.ended_by == "preempted",
                               "batches": self.log.sent + len(self.refs), **usage.fields()}
        if self.started is not None:
            out["started"] = self.started
        return out


def run_job(job_id: str, attempt: int, spec: dict[str, Any], owner: tuple[str, str, str],
            opts: AttemptOptions, cap: bytes = b"") -> AttemptOutcome:
    """Run one attempt as a process group; stream its lines; return its outcome (the Ray task)."""
    return Attempt(job_id, attempt, spec, owner, opts, cap).run()


def _node_name() -> str:
    """A node sage-ops added is known by its name (its Ray processes carry it); others by host."""
    return os.environ.get(NODE_ENV) or socket.gethostname()


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


run_job_task = ray.remote(max_retries=0)(run_job)

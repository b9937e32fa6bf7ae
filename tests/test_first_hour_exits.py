"""Exit codes and interrupts, as a shell user meets them (issue 22): `submit --wait` and `wait`
pass on the job's own exit code, a timed-out wait says so with 124, Ctrl-C says the job runs on
and how to cancel it, cancel is idempotent, and bulk actions take --dry-run and ask on a terminal.
Real daemon, real Ray jobs, real CLI processes (SIGINT sent to the process, a real pty)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from conftest import SAGE, Daemon, wait_until

Result = subprocess.CompletedProcess[str]


def _status(daemon: Daemon, job_id: str) -> str:
    return json.loads(daemon.run("status", "-o", "json", job_id, check=True).stdout)["status"]


def _running(daemon: Daemon, *argv: str) -> str:
    """A job that prints `ready` once it runs, then sleeps (its id, once it is RUNNING)."""
    job_id = daemon.submit_q(*argv, "--", "sh", "-c", "echo ready; sleep 300")
    wait_until(lambda: _status(daemon, job_id) == "RUNNING", timeout=60)
    return job_id


def _pending(daemon: Daemon, blocker: str, name: str, n: int) -> list[str]:
    """`n` jobs named `name-i` that wait on `blocker` (PENDING without using the cluster)."""
    return [daemon.submit_q("--name", f"{name}-{i}", "--after", blocker, "--", "true") for i in range(n)]


@pytest.fixture
def blocker(daemon: Daemon) -> Iterator[str]:
    """A running job that others can wait on; cancelled at the end."""
    job_id = _running(daemon)
    yield job_id
    daemon.run("cancel", job_id)


# -- exit codes --------------------------------------------------------------------------------
def test_submit_wait_exits_with_the_jobs_own_code(daemon: Daemon) -> None:
    out = daemon.run("submit", "--wait", "--", "sh", "-c", "exit 3")
    assert out.returncode == 3, out.stderr


def test_a_job_killed_by_its_timeout_exits_as_a_shell_does_128_plus_sigterm(daemon: Daemon) -> None:
    out = daemon.run("submit", "--wait", "--timeout", "1", "--", "sleep", "300")
    assert out.returncode == 128 + signal.SIGTERM, out.stderr


def test_wait_on_a_cancelled_job_exits_143(daemon: Daemon) -> None:
    job_id = _running(daemon)
    daemon.run("cancel", job_id, check=True)
    assert daemon.run("wait", job_id).returncode == 143


def test_wait_on_a_job_that_ended_without_a_code_exits_125(daemon: Daemon) -> None:
    out = daemon.run("submit", "--json", "--gpu", "1", "--resource", "TPU=1", "--", "true")
    rejected = json.loads(out.stdout)["id"]
    assert daemon.run("wait", rejected).returncode == 125


def test_wait_timeout_has_its_own_code(daemon: Daemon) -> None:
    job_id = _running(daemon)
    out = daemon.run("wait", "--timeout", "0.2", job_id)
    daemon.run("cancel", job_id)
    assert out.returncode == 124, out.stderr


def test_wait_timeout_says_it_timed_out(daemon: Daemon) -> None:
    job_id = _running(daemon)
    out = daemon.run("wait", "--timeout", "0.2", job_id)
    daemon.run("cancel", job_id)
    assert "timed out" in out.stderr


def test_wait_on_several_exits_with_the_first_that_did_not_complete(daemon: Daemon) -> None:
    jobs = [daemon.submit_q("--", "sh", "-c", f"exit {code}") for code in (0, 4, 5)]
    assert daemon.run("wait", *jobs).returncode == 4


# -- Ctrl-C ------------------------------------------------------------------------------------
def _interrupt(daemon: Daemon, argv: list[str], ready: str, stream: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI, wait until `ready` shows on its `stream` (it is in its loop), send SIGINT."""
    proc = subprocess.Popen([*SAGE, *argv], env=daemon.env, cwd=daemon.home, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[str] = []
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    assert pipe is not None
    for line in pipe:
        seen.append(line)
        if ready in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    joined = "".join(seen)
    return subprocess.CompletedProcess(argv, proc.returncode, joined + out if stream == "stdout" else out,
                                       joined + err if stream == "stderr" else err)


@pytest.fixture(scope="module", params=["submit --wait", "logs -f", "wait"])
def interrupted(request: pytest.FixtureRequest, daemon: Daemon) -> Iterator[tuple[str, Result]]:
    """(the job, the CLI's result) after Ctrl-C during each command that follows or waits."""
    if request.param == "submit --wait":
        out = _interrupt(daemon, ["submit", "--wait", "--", "sh", "-c", "echo ready; sleep 300"], "ready", "stdout")
        job_id = out.stderr.split("submitted job ")[1].split()[0]
    elif request.param == "logs -f":
        job_id = _running(daemon)
        out = _interrupt(daemon, ["logs", "-f", job_id], "ready", "stdout")
    else:
        done = daemon.submit_q("--", "true")
        daemon.run("wait", done, check=True)
        job_id = _running(daemon)
        out = _interrupt(daemon, ["wait", done, job_id], f"{done} COMPLETED", "stderr")
    yield job_id, out
    daemon.run("cancel", job_id)


def test_ctrl_c_exits_130(interrupted: tuple[str, Result]) -> None:
    assert interrupted[1].returncode == 130, interrupted[1].stderr


def test_ctrl_c_prints_the_command_that_cancels_the_job(
        interrupted: tuple[str, Result]) -> None:
    job_id, out = interrupted
    assert f"interrupted: job {job_id} keeps running; to cancel: sage-ops cancel {job_id}" in out.stderr.splitlines()


def test_ctrl_c_leaves_the_job_running(daemon: Daemon,
                                       interrupted: tuple[str, Result]) -> None:
    assert _status(daemon, interrupted[0]) == "RUNNING"


# -- idempotent cancel -------------------------------------------------------------------------
def test_cancelling_a_cancelled_job_exits_0(daemon: Daemon) -> None:
    job_id = _running(daemon)
    daemon.run("cancel", job_id, check=True)
    assert daemon.run("cancel", job_id).returncode == 0


def test_cancelling_a_cancelled_job_says_it_already_was(daemon: Daemon) -> None:
    job_id = _running(daemon)
    daemon.run("cancel", job_id, check=True)
    assert "is already CANCELLED" in daemon.run("cancel", job_id).stderr


def test_cancelling_a_finished_job_exits_0(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--", "true")
    daemon.run("wait", job_id, check=True)
    assert daemon.run("cancel", job_id).returncode == 0


def test_the_api_cancel_of_a_finished_job_answers_its_record(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--", "true")
    daemon.run("wait", job_id, check=True)
    assert daemon.client().cancel_job(job_id).status == "COMPLETED"


def test_cancelling_an_unknown_job_is_still_an_error(daemon: Daemon) -> None:
    assert daemon.run("cancel", "nosuchjob").returncode == 1


# -- bulk actions: --dry-run, asking on a terminal ---------------------------------------------
def test_dry_run_lists_what_it_would_cancel(daemon: Daemon, blocker: str) -> None:
    name = f"dry-{uuid.uuid4().hex[:6]}"
    jobs = _pending(daemon, blocker, name, 2)
    out = daemon.run("cancel", "--name", f"{name}-*", "--dry-run")
    assert sorted(line.split()[0] for line in out.stdout.splitlines()) == sorted(jobs)


def test_dry_run_touches_nothing(daemon: Daemon, blocker: str) -> None:
    name = f"dry-{uuid.uuid4().hex[:6]}"
    jobs = _pending(daemon, blocker, name, 2)
    daemon.run("cancel", "--name", f"{name}-*", "--dry-run", check=True)
    daemon.run("retry", *jobs, "--dry-run")
    assert [_status(daemon, j) for j in jobs] == ["PENDING", "PENDING"]


def test_retry_dry_run_says_why_a_job_cannot_be_retried(daemon: Daemon, blocker: str) -> None:
    out = daemon.run("retry", blocker, "--dry-run")
    assert out.returncode == 1 and "only a finished job can be retried" in out.stderr


def _on_a_terminal(daemon: Daemon, answer: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI with a real pty as stdin (a terminal), `answer` typed into it."""
    master, slave = os.openpty()
    try:
        os.write(master, answer.encode())
        return subprocess.run([*SAGE, *argv], env=daemon.env, cwd=daemon.home, stdin=slave, capture_output=True,
                              text=True, timeout=120)
    finally:
        os.close(slave)
        os.close(master)


def test_on_a_terminal_many_jobs_are_not_touched_without_a_yes(daemon: Daemon, blocker: str) -> None:
    name = f"ask-{uuid.uuid4().hex[:6]}"
    jobs = _pending(daemon, blocker, name, 6)
    out = _on_a_terminal(daemon, "n\n", "cancel", "--name", f"{name}-*")
    assert (out.returncode, {_status(daemon, j) for j in jobs}) == (1, {"PENDING"}), out.stderr


def test_on_a_terminal_a_yes_answer_cancels_them(daemon: Daemon, blocker: str) -> None:
    name = f"ask-{uuid.uuid4().hex[:6]}"
    jobs = _pending(daemon, blocker, name, 6)
    out = _on_a_terminal(daemon, "y\n", "cancel", "--name", f"{name}-*")
    assert (out.returncode, {_status(daemon, j) for j in jobs}) == (0, {"CANCELLED"}), out.stderr


def test_on_a_terminal_the_question_lists_the_jobs(daemon: Daemon, blocker: str) -> None:
    name = f"ask-{uuid.uuid4().hex[:6]}"
    jobs = _pending(daemon, blocker, name, 6)
    out = _on_a_terminal(daemon, "n\n", "cancel", "--name", f"{name}-*")
    assert all(j in out.stderr for j in jobs) and "cancel these 6 jobs? [y/N]" in out.stderr


def test_yes_skips_the_question(daemon: Daemon, blocker: str) -> None:
    name = f"ask-{uuid.uuid4().hex[:6]}"
    jobs = _pending(daemon, blocker, name, 6)
    out = _on_a_terminal(daemon, "", "cancel", "-y", "--name", f"{name}-*")
    assert (out.returncode, {_status(daemon, j) for j in jobs}) == (0, {"CANCELLED"}), out.stderr


def test_without_a_terminal_nothing_is_asked(daemon: Daemon, blocker: str) -> None:
    name = f"ask-{uuid.uuid4().hex[:6]}"
    jobs = _pending(daemon, blocker, name, 6)
    out = daemon.run("cancel", "--name", f"{name}-*", input="")
    assert (out.returncode, {_status(daemon, j) for j in jobs}) == (0, {"CANCELLED"}), out.stderr

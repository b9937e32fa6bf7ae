"""Single-user mode: a job runs as the daemon's own user, and bubblewrap keeps the daemon's files
out of its sight (its state dir: database, logs, Ray token and transit key; its config dir:
sealing key, admin token; its socket; its Ray head's temp dir).

Real parts: two single-user daemons (`security.switch_users: off`) shaped as on a laptop (a Ray head
of their own, the socket in $XDG_RUNTIME_DIR), one with the sandbox (the default, where bubblewrap
works) and one without: the same probe job reaches everything on the second, nothing on the
first. Each fact is a test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Daemon, wait_until
from probe import lines, run_probe

from sage_ops import rayhead
from sage_ops.pipeline import FileSink, FileSource, RemoteEnvironment
from sage_ops.server.backend import sandbox

pytestmark = pytest.mark.skipif(sandbox.bwrap() is None, reason="bubblewrap is not installed or cannot run here")

TARGETS = ["database", "state-dir", "socket", "sealing-key", "admin-token", "ray-token", "transit-key", "ray-temp",
           "other-log"]


def laptop(sandboxed: bool) -> Daemon:
    """A single-user daemon with its own Ray head and its socket outside its state dir."""
    d = Daemon({}, {"ray": {"num_cpus": 2},
                    "security": {"switch_users": "off", "sandbox": "auto" if sandboxed else "off"}})
    run = d.home / "run"
    run.mkdir(mode=0o700)
    d.env["XDG_RUNTIME_DIR"] = str(run)
    d.socket = run / "sage-ops" / "sage-ops.sock"
    d.start("--tcp", "127.0.0.1:0")  # TCP: the daemon writes its local admin token
    return d


def targets(d: Daemon) -> dict[str, str]:
    """The daemon's private files and dirs, after a job with a secret (it makes the sealing key)."""
    client = d.client()
    other = client.submit_job({"command": ["echo", "another job's line"], "secret_env": {"K": "a-secret-value"}})
    assert client.wait(other.id, timeout=120).status == "COMPLETED"
    config = d.home / "config" / "sage-ops"
    temp = (rayhead.load_record(d.state) or {})["temp_dir"]
    found = {"database": d.state / "sage-ops.db", "state-dir": d.state, "socket": d.socket,
             "sealing-key": config / "secret.key", "admin-token": config / "token",
             "ray-token": d.state / "ray" / "auth_token", "transit-key": d.state / "ray" / "transit.key",
             "ray-temp": Path(temp).parent, "other-log": next(p for p in d.home.rglob(f"*{other.id}*") if p.is_file())}
    return {k: str(v) for k, v in found.items()}


@pytest.fixture(scope="module")
def daemons() -> Iterator[dict[str, Daemon]]:
    made: list[Daemon] = []
    try:
        for sandboxed in (True, False):
            made.append(laptop(sandboxed))
        yield {"sandboxed": made[0], "open": made[1]}
    finally:
        for d in made:
            d.run("daemon", "stop", "--ray", timeout=90)
            shutil.rmtree(d.home, ignore_errors=True)


@pytest.fixture(scope="module")
def seen(daemons: dict[str, Daemon]) -> dict[str, dict[str, str]]:
    return {name: run_probe(d.client(), targets(d)) for name, d in daemons.items()}


@pytest.fixture(scope="module")
def from_home(daemons: dict[str, Daemon]) -> dict[str, str]:
    """What a sandboxed job reaches when its working dir is the daemon's home, an ancestor of all
    its files (a job submitted from ~)."""
    d = daemons["sandboxed"]
    return run_probe(d.client(), targets(d), working_dir=str(d.home))


@pytest.mark.parametrize("target", TARGETS)
def test_without_the_sandbox_a_job_reaches(seen: dict[str, dict[str, str]], target: str) -> None:
    """The probe finds each file: what the sandbox hides is really there."""
    assert seen["open"].get(target) == "OPEN"


@pytest.mark.parametrize("target", TARGETS)
def test_in_the_sandbox_a_job_cannot_reach(seen: dict[str, dict[str, str]], target: str) -> None:
    assert seen["sandboxed"].get(target) == "denied"


@pytest.mark.parametrize("target", TARGETS)
def test_a_job_working_in_the_daemons_home_cannot_reach(from_home: dict[str, str], target: str) -> None:
    assert from_home.get(target) == "denied"


def test_a_job_working_in_the_daemons_state_dir_finds_it_empty(daemons: dict[str, Daemon]) -> None:
    d = daemons["sandboxed"]
    found = run_probe(d.client(), {"cwd": "."}, working_dir=str(d.state))
    assert found == {"cwd": "denied"}


def test_health_says_jobs_do_not_see_the_daemons_files(daemons: dict[str, Daemon]) -> None:
    assert "(bubblewrap)" in (daemons["sandboxed"].client().health_check().identity or "")


def test_health_says_the_sandbox_is_off(daemons: dict[str, Daemon]) -> None:
    identity = daemons["open"].client().health_check().identity or ""
    assert "jobs can read the daemon's files by path (security.sandbox: off)" in identity


def test_a_sandboxed_job_reads_and_writes_its_working_dir(daemons: dict[str, Daemon], tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("input")
    client = daemons["sandboxed"].client()
    view = client.submit_job({"command": ["sh", "-c", "cat in.txt > out.txt"], "working_dir": str(tmp_path)})
    assert client.wait(view.id, timeout=120).status == "COMPLETED"
    assert (tmp_path / "out.txt").read_text() == "input"


def test_a_sandboxed_job_returns_its_result(daemons: dict[str, Daemon]) -> None:
    client = daemons["sandboxed"].client()
    view = client.submit_job({"command": ["sh", "-c", 'echo \'{"ok": 1}\' > "$SAGE_OPS_RESULT_FILE"']})
    assert client.wait(view.id, timeout=120).status == "COMPLETED"
    assert client.get_job_result(view.id) == {"ok": 1}


def test_a_sandboxed_job_runs_python(daemons: dict[str, Daemon]) -> None:
    client = daemons["sandboxed"].client()
    view = client.submit_job({"command": [shutil.which("python3") or "python3", "-c", "print('py ok')"]})
    assert client.wait(view.id, timeout=120).status == "COMPLETED"
    assert lines(client, view.id) == ["py ok"]


def test_a_sandboxed_pipeline_drives_ray(daemons: dict[str, Daemon], tmp_path: Path) -> None:
    """A pipeline keeps the Ray temp dir and token it drives Ray with (documented as sharing Ray)."""
    (tmp_path / "in.txt").write_text("a\nb\n")
    env = RemoteEnvironment("sandboxed", f"unix://{daemons['sandboxed'].socket}")
    env.source(FileSource, path=str(tmp_path / "in.txt")).map(str.upper).sink(FileSink, path=str(tmp_path / "out"))
    assert env.wait_for_completion(env.submit(), timeout=240).status.value == "COMPLETED"


def test_a_sandboxed_job_cannot_see_the_daemons_process(daemons: dict[str, Daemon]) -> None:
    d = daemons["sandboxed"]
    pid = int((d.state / "daemon.pid").read_text().split()[0])
    client = d.client()
    view = client.submit_job({"command": ["sh", "-c", f"kill -0 {pid} 2>/dev/null && echo seen || echo unseen"]})
    assert client.wait(view.id, timeout=120).status == "COMPLETED"
    assert lines(client, view.id) == ["unseen"]


def test_a_cancelled_sandboxed_job_ends_with_what_it_started(daemons: dict[str, Daemon]) -> None:
    client = daemons["sandboxed"].client()
    view = client.submit_job({"command": ["sh", "-c", "setsid sleep 6017 & echo started; sleep 6017"]})
    wait_until(lambda: lines(client, view.id) == ["started"], timeout=120)
    client.cancel_job(view.id)
    assert client.wait(view.id, timeout=120).status == "CANCELLED"
    assert wait_until(lambda: not [p for p in os.listdir("/proc") if p.isdigit() and _runs(p, "sleep 6017")],
                      timeout=30)


def _runs(pid: str, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False

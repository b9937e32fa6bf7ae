"""Single-user mode: a job runs as the daemon's own user, and bubblewrap keeps the daemon's files
out of its sight (its state dir: database, socket, logs; its config dir: sealing key, admin token).

Real parts: two single-user daemons (`security.switch_users: off`, as on a laptop) on the session's
Ray head, one with the sandbox (the default, where bubblewrap works) and one without: the same
probe job reaches everything on the second, nothing on the first. Each fact is a test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, wait_until
from probe import lines, run_probe

from sage_ops.server import sandbox

pytestmark = pytest.mark.skipif(sandbox.bwrap() is None, reason="bubblewrap is not installed or cannot run here")

TARGETS = ["database", "state-dir", "socket", "sealing-key", "admin-token", "other-log"]


def single_user(new_daemon: Callable[..., Daemon], sandboxed: bool) -> Daemon:
    d = new_daemon({"security": {"switch_users": "off", "sandbox": "auto" if sandboxed else "off"}})
    d.start("--tcp", "127.0.0.1:0")  # TCP: the daemon writes its local admin token
    return d


def reach(d: Daemon) -> dict[str, str]:
    """What a probe job of the daemon's own user reaches of the daemon's files."""
    client = d.client()
    other = client.submit_job({"command": ["echo", "another job's line"], "secret_env": {"K": "a-secret-value"}})
    assert client.wait(other.id, timeout=120).status == "COMPLETED"
    config = d.home / "config" / "sage-ops"
    targets = {"database": d.state / "sage-ops.db", "state-dir": d.state, "socket": d.socket,
               "sealing-key": config / "secret.key", "admin-token": config / "token",
               "other-log": next(p for p in d.home.rglob(f"*{other.id}*") if p.is_file())}
    return run_probe(client, {k: str(v) for k, v in targets.items()})


@pytest.fixture(scope="module")
def daemons(ray_head: dict[str, str]) -> Iterator[dict[str, Daemon]]:
    made: list[Daemon] = []

    def make(config: dict[str, Any] | None = None) -> Daemon:
        made.append(Daemon(ray_head, config))
        return made[-1]

    try:
        yield {"sandboxed": single_user(make, True), "open": single_user(make, False)}
    finally:
        for d in made:
            d.cleanup()


@pytest.fixture(scope="module")
def seen(daemons: dict[str, Daemon]) -> dict[str, dict[str, str]]:
    return {name: reach(d) for name, d in daemons.items()}


@pytest.mark.parametrize("target", TARGETS)
def test_without_the_sandbox_a_job_reaches(seen: dict[str, dict[str, str]], target: str) -> None:
    """The probe finds each file: what the sandbox hides is really there."""
    assert seen["open"].get(target) == "OPEN"


@pytest.mark.parametrize("target", TARGETS)
def test_in_the_sandbox_a_job_cannot_reach(seen: dict[str, dict[str, str]], target: str) -> None:
    assert seen["sandboxed"].get(target) == "denied"


def test_health_says_jobs_do_not_see_the_daemons_files(daemons: dict[str, Daemon]) -> None:
    assert "(bubblewrap)" in (daemons["sandboxed"].client().health_check().identity or "")


def test_health_says_how_to_hide_them_without_the_sandbox(daemons: dict[str, Daemon]) -> None:
    assert "install bubblewrap" in (daemons["open"].client().health_check().identity or "")


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

"""`sage-ops doctor` against real parts: a running daemon, a missing or stale socket, a bad config,
an unreachable PostgreSQL, a real ssh-agent; always the CLI in its own process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SAGE, Daemon

import sage_ops.checks as doctor_mod
from sage_ops.checks import Check, run_checks
from sage_ops.checks.base import Probe
from sage_ops.cli import Ctx

ROOT = Path(__file__).resolve().parent.parent


def parse(proc: subprocess.CompletedProcess[str]) -> dict[str, Check]:
    """The --json report by check name (validated against the model scripts rely on)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    checks = [Check.model_validate(c) for c in json.loads(proc.stdout)]
    assert [c.check for c in checks] == ["python", "ray", "features", "config", "daemon", "ray-head", "database",
                                         "disk", "ssh-agent"]
    for c in checks:
        assert (c.fix is None) == (c.status == "OK"), c
    return {c.check: c for c in checks}


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """HOME and XDG dirs of the test's own, no SAGE_OPS_* or SSH agent from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_OPS_", "XDG_", "SSH_"))}
    env.update({"HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config"),
                "PYTHONPATH": str(ROOT), **extra})
    return env


def run(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SAGE, *args], env=isolated_env(home, **extra), capture_output=True, text=True,
                          timeout=60, cwd=home)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- against a running daemon ----------------------------------------------------------------------
def test_healthy_daemon(daemon: Daemon) -> None:
    proc = daemon.run("doctor", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = parse(proc)
    for name in ("python", "ray", "config", "daemon", "database"):
        assert report[name].status == "OK", report[name]
    assert "leader" in report["daemon"].detail and "mode 0600" in report["daemon"].detail
    assert "daemon: ok" in report["database"].detail
    table = daemon.run("doctor")
    assert table.returncode == 0 and "Traceback" not in table.stderr
    assert "daemon" in table.stdout and "FAIL" not in table.stdout


def test_socket_mode_other_than_configured_warns(daemon: Daemon) -> None:
    os.chmod(daemon.socket, 0o666)
    try:
        proc = daemon.run("doctor", "--json")
    finally:
        os.chmod(daemon.socket, 0o600)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # a WARN is not a failure
    d = parse(proc)["daemon"]
    assert d.status == "WARN" and "0666" in d.detail and d.fix == f"chmod 600 {daemon.socket}"


# -- broken setups (no daemon needed) --------------------------------------------------------------
def test_daemon_not_running(tmp_path: Path) -> None:
    proc = run(tmp_path, "--address", f"unix://{tmp_path}/nope.sock", "doctor", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = parse(proc)
    d = report["daemon"]
    assert d.status == "FAIL" and "not running" in d.detail and "sage-ops daemon start" in (d.fix or "")
    assert report["python"].status == report["ray"].status == report["config"].status == "OK"
    assert report["database"].status == "OK" and "not created yet" in report["database"].detail
    assert report["ray-head"].detail == "no Ray head of this state dir is running"
    agent = report["ssh-agent"]
    assert agent.status == "WARN" and agent.detail.endswith("without --key")  # the option nodes add has
    assert agent.fix == "eval $(ssh-agent) && ssh-add"
    table = run(tmp_path, "--address", f"unix://{tmp_path}/nope.sock", "doctor")
    assert table.returncode == 1 and "Traceback" not in table.stderr
    assert "fix: sage-ops daemon start" in table.stdout


def test_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # closed without unlinking: what a killed daemon leaves behind
    proc = run(tmp_path, "--address", f"unix://{path}", "doctor", "--json")
    assert proc.returncode == 1
    d = parse(proc)["daemon"]
    assert d.status == "FAIL" and "stale socket" in d.detail and "sage-ops daemon start" in (d.fix or "")


def test_bad_config_fails_and_the_rest_still_runs(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("jobmanager: {bogus: 1}\n")
    proc = run(tmp_path, "--config", str(cfg), "doctor", "--json")
    assert proc.returncode == 1
    report = parse(proc)
    c = report["config"]
    assert c.status == "FAIL" and "bogus" in c.detail and str(cfg) in (c.fix or "")
    # the defaults stand in: the daemon check looked at the default socket
    assert report["daemon"].status == "FAIL" and str(tmp_path / "state") in report["daemon"].detail
    missing = run(tmp_path, "--config", str(tmp_path / "none.yaml"), "doctor", "--json")
    assert missing.returncode == 1 and "no such file" in parse(missing)["config"].detail


def test_postgres_unreachable_never_shows_the_password(tmp_path: Path) -> None:
    port = closed_port()
    proc = run(tmp_path, "doctor", "--json", SAGE_OPS_DATABASE__URL=f"postgresql+psycopg://me:s3cret@127.0.0.1:{port}/jobs")
    assert proc.returncode == 1
    db = parse(proc)["database"]
    assert db.status == "FAIL" and f"127.0.0.1:{port}/jobs" in db.detail and "pg_isready" in (db.fix or "")
    assert "s3cret" not in proc.stdout + proc.stderr


@pytest.mark.skipif(not (shutil.which("ssh-agent") and shutil.which("ssh-add") and shutil.which("ssh-keygen")),
                    reason="OpenSSH client tools are not installed")
def test_ssh_agent_keys_are_counted_not_shown(tmp_path: Path) -> None:
    key = tmp_path / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "doctor-test-comment", "-f", str(key)],
                   check=True, timeout=30)
    agent_sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if agent_sock.exists() and stat.S_ISSOCK(agent_sock.stat().st_mode):
                break
            time.sleep(0.05)
        empty = parse(run(tmp_path, "doctor", "--json", SSH_AUTH_SOCK=str(agent_sock)))["ssh-agent"]
        assert empty.status == "WARN" and "no keys" in empty.detail
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(agent_sock)}, check=True,
                       timeout=30, capture_output=True)
        proc = run(tmp_path, "doctor", "--json", SSH_AUTH_SOCK=str(agent_sock))
        loaded = parse(proc)["ssh-agent"]
        assert loaded.status == "OK" and "1 key" in loaded.detail
        fingerprint = subprocess.run(["ssh-keygen", "-lf", str(key)], capture_output=True, text=True,
                                     check=True).stdout.split()[1]
        public = key.with_suffix(".pub").read_text().split()[1]
        for secret in (fingerprint, public, "doctor-test-comment"):
            assert secret not in proc.stdout + proc.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_a_check_that_breaks_becomes_a_fail_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in isolated_env(tmp_path).items():
        monkeypatch.setenv(key, value)

    def broken(p: Probe) -> Check:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(doctor_mod, "CHECKS", [("disk", broken), *doctor_mod.CHECKS[:1]])
    checks = run_checks(Ctx(f"unix://{tmp_path}/nope.sock", None))
    assert checks[0].check == "disk" and checks[0].status == "FAIL"
    assert checks[0].detail == "the check itself failed: RuntimeError: boom second line" and checks[0].fix
    assert checks[1].check == "python"

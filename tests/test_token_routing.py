"""Tokens go only where they belong, and no secret rides on a command line (issue 21).

Real parts: a daemon with a TCP listener, the CLI in its own process, and a "catcher": a plain
HTTP listener on loopback that is not the daemon (another local user's process, say) and
records every request head it is sent."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, wait_until
from pydantic import ValidationError

from sage_ops.client import JobManagerClient
from sage_ops.errors import SageOpsError
from sage_ops.exposure import is_loopback, local_daemon, plaintext_exposure
from sage_ops.server.daemon.daemon import JobManagerServer


class Catcher:
    """An HTTP listener that answers `[]` to anything and keeps each request head it got."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_server((host, 0))
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.heads: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.heads.append(data.decode("latin-1"))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                             b"Connection: close\r\n\r\n[]")

    def authorizations(self) -> list[str]:
        return [line for head in self.heads for line in head.split("\r\n") if line.lower().startswith("authorization")]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def tcp_daemon(ray_head: dict[str, str]) -> Iterator[Daemon]:
    d = Daemon(ray_head)
    d.start("--tcp", "127.0.0.1:0")
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def catcher() -> Iterator[Catcher]:
    c = Catcher()
    yield c
    c.close()


def _admin(d: Daemon) -> str:
    return (d.home / "config" / "sage-ops" / "token").read_text().strip()


def _tcp(d: Daemon) -> str:
    return d.client().health_check().tcp


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))  # no packet is sent: only the route is looked up
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if is_loopback(ip) else ip


# -- the local admin token goes to the local daemon only ---------------------------------------
def test_the_local_admin_token_is_not_sent_to_another_loopback_listener(tcp_daemon: Daemon, catcher: Catcher) -> None:
    tcp_daemon.run("--address", f"tcp://{catcher.address}", "jobs")
    assert catcher.authorizations() == []


def test_the_python_client_does_not_send_it_there_either(tcp_daemon: Daemon, catcher: Catcher,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(key, tcp_daemon.env[key])
    monkeypatch.delenv("SAGE_OPS_TOKEN", raising=False)
    with contextlib.suppress(ValidationError):  # the catcher's `[]` is no job list: what it got matters
        JobManagerClient(f"tcp://{catcher.address}", config={"retry_attempts": 1}).list_jobs()
    assert catcher.authorizations() == []


def test_the_local_daemon_on_loopback_still_gets_it(tcp_daemon: Daemon) -> None:
    out = tcp_daemon.run("--address", f"tcp://{_tcp(tcp_daemon)}", "whoami")
    assert "admin" in out.stdout


def test_another_state_dirs_daemon_gets_no_token_and_the_error_says_why(tcp_daemon: Daemon,
                                                                        tmp_path: Path) -> None:
    old_state = tcp_daemon.env["XDG_STATE_HOME"]
    tcp_daemon.env["XDG_STATE_HOME"] = str(tmp_path)  # the token file is there; this state dir's daemon is not
    try:
        out = tcp_daemon.run("--address", f"tcp://{_tcp(tcp_daemon)}", "jobs")
    finally:
        tcp_daemon.env["XDG_STATE_HOME"] = old_state
    assert (out.returncode, out.stderr.count("\n")) == (1, 1)
    assert "no token was sent: the local admin token goes only to this user's own daemon" in out.stderr


def test_local_means_the_listener_is_held_by_the_pidfiles_daemon(tcp_daemon: Daemon, catcher: Catcher) -> None:
    pid = int((tcp_daemon.state / "daemon.pid").read_text())
    assert local_daemon(_tcp(tcp_daemon), pid)
    assert not local_daemon(catcher.address, pid)


def test_an_explicit_token_file_goes_where_it_is_pointed(tcp_daemon: Daemon, catcher: Catcher,
                                                         tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("explicit-token\n")
    tcp_daemon.run("--address", f"tcp://{catcher.address}", "--token-file", str(f), "jobs")
    assert catcher.authorizations() == ["Authorization: Bearer explicit-token"]


def test_a_token_file_reaches_the_daemon(tcp_daemon: Daemon, tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(_admin(tcp_daemon))
    env_address = {"SAGE_OPS_ADDRESS": f"tcp://{_tcp(tcp_daemon)}"}
    tcp_daemon.env.update(env_address)
    try:
        out = tcp_daemon.run("--token-file", str(f), "whoami")
    finally:
        tcp_daemon.env.pop("SAGE_OPS_ADDRESS")
    assert "admin" in out.stdout


def test_token_on_the_command_line_warns(tcp_daemon: Daemon, catcher: Catcher) -> None:
    out = tcp_daemon.run("--address", f"tcp://{catcher.address}", "--token", "visible", "jobs")
    assert "warning: --token is visible to every local user in /proc/*/cmdline" in out.stderr


# -- no token in clear beyond loopback --------------------------------------------------------
def test_a_token_in_clear_to_a_remote_address_is_refused(tcp_daemon: Daemon, tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("t")
    out = tcp_daemon.run("--address", "tcp://192.0.2.77:19001", "--token-file", str(f), "jobs")
    assert (out.returncode, out.stderr.count("\n")) == (1, 1)
    assert out.stderr.startswith("error: refusing to send a token in clear to 192.0.2.77:19001")


def test_the_python_client_refuses_it_too() -> None:
    with pytest.raises(SageOpsError, match="refusing to send a token in clear") as err:
        JobManagerClient("tcp://192.0.2.77:19001", token="t")
    assert err.value.code == "insecure"


def test_with_insecure_or_tls_it_is_allowed() -> None:
    assert JobManagerClient("tcp://192.0.2.77:19001", token="t", config={"insecure": True}).addresses
    assert JobManagerClient("https://192.0.2.77:19001", token="t").addresses


def test_insecure_sends_it_in_clear_when_asked(tcp_daemon: Daemon, tmp_path: Path) -> None:
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("this machine has no address beyond loopback")
    c = Catcher(ip)
    try:
        f = tmp_path / "token"
        f.write_text("remote-token")
        tcp_daemon.run("--address", f"tcp://{c.address}", "--token-file", str(f), "--insecure", "jobs")
        assert c.authorizations() == ["Authorization: Bearer remote-token"]
    finally:
        c.close()


# -- the daemon does not serve tokens in clear beyond loopback ----------------------------------
def test_daemon_start_refuses_a_plaintext_non_loopback_tcp(new_daemon: Any) -> None:
    d: Daemon = new_daemon()
    out = d.run("daemon", "start", "--tcp", "0.0.0.0:0")
    assert (out.returncode, out.stderr.count("\n")) == (2, 1)
    assert "without TLS would carry bearer tokens across the network in clear" in out.stderr
    assert not (d.state / "daemon.pid").exists()


def test_insecure_plaintext_serves_it_as_asked(new_daemon: Any) -> None:
    d: Daemon = new_daemon()
    d.start("--tcp", "0.0.0.0:0", "--insecure-plaintext")
    assert d.client().health_check().tcp.startswith("0.0.0.0:")


def test_one_rule_for_the_cli_and_the_python_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("SAGE_OPS_CONFIG", raising=False)
    assert plaintext_exposure("10.0.0.5", tls=False) is not None
    assert plaintext_exposure("127.0.0.1", tls=False) is None
    assert JobManagerServer(host="10.0.0.5", port=19001).cfg.jobmanager.host == "127.0.0.1"
    assert JobManagerServer(host="10.0.0.5", port=19001,
                            **{"security.insecure_plaintext": True}).cfg.jobmanager.host == "10.0.0.5"


# -- no secret on a command line ---------------------------------------------------------------
def _job_output(d: Daemon, job_id: str) -> str:
    d.run("wait", job_id, check=True)
    return d.run("logs", job_id, check=True).stdout


def test_secret_env_name_takes_the_value_from_the_environment(tcp_daemon: Daemon) -> None:
    tcp_daemon.env["API_KEY"] = "from-the-environment"
    try:
        jid = tcp_daemon.submit_q("--secret-env", "API_KEY", "--", "sh", "-c", 'echo "length ${#API_KEY}"')
    finally:
        tcp_daemon.env.pop("API_KEY")
    assert "length 20" in _job_output(tcp_daemon, jid)


def test_secret_env_name_not_set_is_one_line(tcp_daemon: Daemon) -> None:
    out = tcp_daemon.run("submit", "--secret-env", "NOT_SET_ANYWHERE", "--", "true")
    assert (out.returncode, out.stderr.count("\n")) == (2, 1)
    assert "NOT_SET_ANYWHERE is not set in this environment" in out.stderr


def test_secret_env_file(tcp_daemon: Daemon, tmp_path: Path) -> None:
    f = tmp_path / "secrets.env"
    f.write_text("# comment\n\nA_KEY=abc=def\nFROM_ENV\n")
    tcp_daemon.env["FROM_ENV"] = "xy"
    try:
        jid = tcp_daemon.submit_q("--secret-env-file", str(f), "--", "sh", "-c", 'echo "got ${#A_KEY} ${#FROM_ENV}"')
    finally:
        tcp_daemon.env.pop("FROM_ENV")
    assert "got 7 2" in _job_output(tcp_daemon, jid)


def test_secret_env_with_a_value_works_but_warns(tcp_daemon: Daemon) -> None:
    out = tcp_daemon.run("submit", "-q", "--secret-env", "K=visible", "--", "true")
    assert out.returncode == 0
    assert "warning: --secret-env K=... is visible to every local user in /proc/*/cmdline" in out.stderr
    assert "visible" not in out.stderr.replace("is visible", "")


def test_daemon_start_db_is_not_in_the_daemons_argv(new_daemon: Any) -> None:
    d: Daemon = new_daemon()
    db = d.home / "given-by-flag.db"
    d.start("--db", f"sqlite:///{db}")
    pid = int((d.state / "daemon.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"given-by-flag" not in cmdline
    assert wait_until(db.exists)  # and the daemon uses it all the same


def test_config_show_redacts_the_database_password(tcp_daemon: Daemon) -> None:
    tcp_daemon.env["SAGE_OPS_DATABASE__URL"] = "postgresql+psycopg://user:hunter2@db/sageops"
    try:
        shown = [tcp_daemon.run("config", "show", *extra, check=True).stdout for extra in ((), ("--sources",))]
    finally:
        tcp_daemon.env.pop("SAGE_OPS_DATABASE__URL")
    assert [("hunter2" in s, "user:***@db" in s) for s in shown] == [(False, True)] * 2


def test_the_daemon_environment_is_owner_only() -> None:
    """Where `--db` goes instead: /proc/PID/environ is readable by the process's owner only."""
    assert os.stat(f"/proc/{os.getpid()}/environ").st_mode & 0o077 == 0

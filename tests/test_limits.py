"""Abuse has limits, and the Unix socket always answers: a flood of half-open TCP connections
neither starves the Unix socket nor an authenticated TCP client, a half-open connection is closed
by the server, denials with a bad token reach the audit as a bounded number of rows, and every
file the daemon writes is owner-only — against a real daemon over its real sockets."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import stat
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
from conftest import SAGE, Daemon, wait_until

from sage_ops.client import JobManagerClient

FLOOD = 1100  # what made both listeners unreachable before
MORE = re.compile(r"(\d+) more ")


def tcp_daemon(new_daemon: Any, config: dict[str, Any] | None = None) -> tuple[Daemon, str, str]:
    """A daemon with a loopback TCP listener, started with 1024 open files at most (a container's or
    a unit's `LimitNOFILE=1024`: Ray cannot raise it)."""
    d: Daemon = new_daemon(config)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    subprocess.run([*SAGE, "daemon", "start", "--tcp", "127.0.0.1:0"], env=d.env, cwd=d.home, check=True,
                   capture_output=True, timeout=200, preexec_fn=limit)  # noqa: PLW1509 - no threads here
    address = d.client().health_check().tcp
    token = (d.home / "config" / "sage-ops" / "token").read_text().strip()
    return d, address, token


@contextlib.contextmanager
def half_open(address: str, n: int, source: str = "127.0.0.2") -> Iterator[list[socket.socket]]:
    """`n` connections from `source` (another loopback address: another peer) that send nothing
    or half a request line and stay open."""
    host, port = address.rsplit(":", 1)
    socks: list[socket.socket] = []
    try:
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(5)
            s.bind((source, 0))
            try:
                s.connect((host, int(port)))
                if i % 2:
                    s.sendall(b"GET /v1/health HT")
            except OSError:  # refused or reset: the daemon's cap at work
                pass
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_server(s: socket.socket) -> bool:
    s.settimeout(30)
    try:
        return s.recv(1) == b""
    except TimeoutError:  # still open
        return False
    except OSError:  # reset: closed too
        return True


def test_a_half_open_flood_leaves_the_socket_and_an_authenticated_tcp_client_working(new_daemon: Any) -> None:
    d, address, token = tcp_daemon(new_daemon)
    with half_open(address, FLOOD):
        assert d.client(timeout=30).health_check().status == "ok"
        tcp = JobManagerClient(f"tcp://{address}", config={"timeout": 30}, token=token)
        assert tcp.whoami().role == "admin"


def test_a_connection_that_never_sends_its_request_head_is_closed(new_daemon: Any) -> None:
    d, address, _ = tcp_daemon(new_daemon, {"jobmanager": {"header_timeout": 1}})
    with half_open(address, 2, source="127.0.0.1") as (silent, partial):
        assert closed_by_server(silent)
        assert closed_by_server(partial)


def test_bad_tokens_are_denied_with_json_and_audited_as_a_few_rows(new_daemon: Any) -> None:
    d, address, _ = tcp_daemon(new_daemon, {"security": {"denial_audit_interval": 2}})
    with httpx.Client(base_url=f"http://{address}", headers={"Authorization": "Bearer so_wrong"}) as http:
        answers = [http.get("/v1/jobs") for _ in range(1000)]
    assert {(r.status_code, r.json()["error"]["code"]) for r in answers} == {(401, "unauthorized")}

    def denials() -> list[Any]:
        return [e for e in d.client().audit(actor="anonymous", action="denied") if e.status == 401]

    def counted() -> int:  # a row stands for itself, a summary row for the denials it counts
        return sum(int(m.group(1)) if (m := MORE.match(e.detail or "")) else 1 for e in denials())

    wait_until(lambda: counted() == len(answers))
    assert len(denials()) <= 4


def test_every_file_the_daemon_writes_is_owner_only(new_daemon: Any) -> None:
    d, _, _ = tcp_daemon(new_daemon)
    jid = d.submit_q("--", "sh", "-c", 'echo out; echo \'{"ok": 1}\' > "$SAGE_OPS_RESULT_FILE"')
    assert d.run("wait", jid).returncode == 0
    d.stop()
    open_to_others = []
    for root in (d.state, d.home / "config" / "sage-ops"):
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(os.lstat(p).st_mode)
            if mode & 0o077 and not p.is_symlink():
                open_to_others.append(f"{oct(mode)} {p.relative_to(d.home)}")
    assert open_to_others == []


def test_no_file_of_the_state_dir_is_left_for_others_to_read_after_an_upgrade(new_daemon: Any) -> None:
    """A state dir made by an older version (0644 files) is tightened at start."""
    d, _, _ = tcp_daemon(new_daemon)
    d.stop()
    db = d.state / "sage-ops.db"
    db.chmod(0o644)
    d.state.chmod(0o755)
    d.start()
    assert [oct(stat.S_IMODE(p.stat().st_mode)) for p in (d.state, db)] == ["0o700", "0o600"]

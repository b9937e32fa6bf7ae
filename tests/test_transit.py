"""Opened secrets never cross Ray in clear: with the session's (plaintext) Ray head, every packet
on the loopback interface is read while a job with a secret runs. The job gets its secret, the
spec's ordinary env value is seen on the wire (the capture does see Ray's task traffic) and the
secret is not. The sealing itself (server.transit): bound to the job and attempt, refused without
the key or unsealed."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import socket
import threading
from pathlib import Path

import pytest
from conftest import Daemon

from sage_ops.server.backend import transit

ETH_P_ALL = 0x0003


class Sniffer:
    """Every packet on `lo` (AF_PACKET, needs CAP_NET_RAW), searched for the markers as it comes
    (a marker cut between two packets is found too: each packet is searched with the previous one's tail)."""

    def __init__(self, markers: list[bytes]) -> None:
        self.markers = markers
        self.seen: set[bytes] = set()
        self.packets = 0
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 2**20)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        keep = max(len(m) for m in self.markers)
        tail = b""
        while not self.stopping.is_set():
            try:
                pkt = self.sock.recv(262144)
            except TimeoutError:
                continue
            self.packets += 1
            window = tail + pkt
            self.seen.update(m for m in self.markers if m in window)
            tail = pkt[-keep:]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def daemon_sniffed(daemon: Daemon) -> Daemon:
    """conftest's daemon, where the loopback interface can be read."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
    except PermissionError:
        pytest.skip("reading the loopback interface needs CAP_NET_RAW")
    return daemon


def test_secret_is_not_on_the_wire_but_reaches_the_job(daemon_sniffed: Daemon) -> None:
    d = daemon_sniffed
    secret, plain = f"sekrit-{secrets.token_hex(12)}", f"plain-{secrets.token_hex(12)}"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    sniffer = Sniffer([secret.encode(), plain.encode()])
    try:
        client = d.client()
        job = client.submit_command(
            ["sh", "-c", f'test "$(printf %s "$API_KEY" | sha256sum | cut -c1-64)" = {digest} && echo got-it'],
            env={"PLAIN": plain}, secret_env={"API_KEY": secret})
        done = client.wait(job, timeout=120)
    finally:
        sniffer.stop()
    assert done.status == "COMPLETED"  # the job got the real value
    assert [e.message for e in client.get_job_logs(job)] == ["got-it"]
    assert plain.encode() in sniffer.seen  # the capture saw the task's arguments cross
    assert secret.encode() not in sniffer.seen


@pytest.fixture
def key_env(tmp_path: Path) -> dict[str, str]:
    key = tmp_path / "transit.key"
    key.write_text(transit.new_key())
    return {transit.TRANSIT_ENV: str(key)}


def test_sealed_secrets_open_for_their_job_and_attempt_only(key_env: dict[str, str]) -> None:
    blob = transit.seal({"API_KEY": "v1"}, "job-a", 1, key_env)
    assert "v1" not in blob and blob.startswith(transit.PREFIX)
    assert transit.opened({"secret_env": blob}, "job-a", 1, key_env) == ({"API_KEY": "v1"}, None)
    assert transit.opened({"secret_env": blob}, "job-a", 2, key_env)[1] is not None  # another attempt
    assert transit.opened({"secret_env": blob}, "job-b", 1, key_env)[1] is not None  # another job


def test_opening_without_the_right_key_or_unsealed_is_refused(key_env: dict[str, str], tmp_path: Path) -> None:
    blob = transit.seal({"API_KEY": "v1"}, "job-a", 1, key_env)
    other = tmp_path / "other.key"
    other.write_text(base64.b64encode(os.urandom(32)).decode())
    secret, why = transit.opened({"secret_env": blob}, "job-a", 1, {transit.TRANSIT_ENV: str(other)})
    assert secret == {} and "not the head's" in (why or "")
    assert "no transit key" in (transit.opened({"secret_env": blob}, "job-a", 1, {})[1] or "")
    assert "unsealed" in (transit.opened({"secret_env": {"API_KEY": "v1"}}, "job-a", 1, key_env)[1] or "")
    with pytest.raises(transit.TransitError, match="no transit key"):
        transit.seal({"API_KEY": "v1"}, "job-a", 1, {})


def test_a_job_does_not_see_the_transit_key_path(daemon_sniffed: Daemon) -> None:
    client = daemon_sniffed.client()
    job = client.submit_command(["sh", "-c", "env | cut -d= -f1"], secret_env={"API_KEY": "x"})
    assert client.wait(job, timeout=120).status == "COMPLETED"
    names = {e.message for e in client.get_job_logs(job)}
    assert "API_KEY" in names and transit.TRANSIT_ENV not in names


def test_the_heads_transit_key_is_owner_only(ray_head: dict[str, str]) -> None:
    assert os.stat(ray_head[transit.TRANSIT_ENV]).st_mode & 0o777 == 0o600

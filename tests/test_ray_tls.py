"""`ray.tls`: a daemon starts its own head with mutual TLS (one head for this module), `nodes add`
joins a second Ray node through the real sshd with a certificate of the cluster CA for a key made
on the node, and a job (with a secret) runs there. The head's GCS port refuses a plaintext gRPC
client and a TLS client whose certificate another CA signed; the daemon's key files are owner-only
and no key material reaches the node's command lines or the daemon's log."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

from sage_ops.nodes import tls
from sage_ops.server.backend import transit

NODE = "tlsnode"


@pytest.fixture(scope="module")
def tls_daemon(sshd: Any) -> Iterator[Daemon]:
    """A daemon with a head of its own (no session head: one with TLS), and the sshd node's key known."""
    d = Daemon({}, {"ray": {"tls": True, "include_dashboard": False, "num_cpus": 2},
                    "nodes": {"known_hosts": "KNOWN"}})
    cfg = d.home / "config.yaml"
    cfg.write_text(cfg.read_text().replace("KNOWN", str(d.home / "known_hosts")))
    (d.home / "known_hosts").write_text(sshd.known_hosts_line())
    try:
        d.start()
        yield d
    finally:
        d.run("nodes", "remove", NODE, "--force", timeout=180)
        d.run("daemon", "stop", "--ray", timeout=120)  # and its own head, with everything on it
        d.cleanup()


def head_port(d: Daemon) -> int:
    return int(json.loads((d.state / "ray" / "head.json").read_text())["address"].rsplit(":", 1)[1])


def proc_files(name: str) -> dict[int, bytes]:
    """/proc/PID/<name> of every process that can be read."""
    found = {}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            found[pid] = Path(f"/proc/{pid}/{name}").read_bytes()
        except OSError:
            pass
    return found


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # and an empty SETTINGS


def answers_grpc(port: int, cert_dir: Path | None = None, ca: Path | None = None) -> bool:
    """Whether the port answers an HTTP/2 client (what every gRPC call starts with) with its SETTINGS
    frame: in plaintext, or over TLS with the certificate in `cert_dir`, checking the server with `ca`."""
    sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=8)
    try:
        if cert_dir is not None and ca is not None:
            ctx = ssl.create_default_context(cafile=str(ca))
            ctx.load_cert_chain(cert_dir / tls.CERT, cert_dir / tls.KEY)
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.sendall(PREFACE)
        head = b""
        while len(head) < 9 and (chunk := sock.recv(9 - len(head))):
            head += chunk
    except OSError:  # ssl.SSLError too: the handshake or the first read refused
        return False
    finally:
        sock.close()
    return len(head) == 9 and head[3] == 4


def test_the_cluster_ca_and_head_key_are_owner_only(tls_daemon: Daemon) -> None:
    d = tls_daemon.state / "ray" / "tls"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for key in (tls.CA_KEY, tls.KEY):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600, key


def test_gcs_refuses_plaintext_and_foreign_certificates(tls_daemon: Daemon, tmp_path: Path) -> None:
    port, own = head_port(tls_daemon), tls_daemon.state / "ray" / "tls"
    assert not answers_grpc(port)  # a plaintext client (Ray without TLS) is refused
    foreign = tmp_path / "foreign"
    tls.ensure_head(foreign)  # a CA and a certificate of another cluster
    assert not answers_grpc(port, foreign, own / tls.CA_CERT)  # mutual TLS: its certificate is not ours
    assert answers_grpc(port, own, own / tls.CA_CERT)  # the same probe gets through with the cluster's


def test_a_job_with_a_secret_runs_on_a_tls_node(tls_daemon: Daemon, sshd: Any) -> None:
    d = tls_daemon
    out = d.run("nodes", "add", f"root@127.0.0.1:{sshd.port}", "--key", str(sshd.client_key), "--name", NODE,
                "--venv", "~/.sage-ops/venv-daemon", "--resources", '{"TLSNODE": 1}', "--num-cpus", "1",
                timeout=900)
    assert out.returncode == 0, out.stderr
    secret = f"sekrit-{secrets.token_hex(8)}"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    client = d.client()
    job = client.submit_command(
        ["sh", "-c", f'test "$(printf %s "$API_KEY" | sha256sum | cut -c1-64)" = {digest} && echo got-it'],
        secret_env={"API_KEY": secret}, resources={"custom_resources": {"TLSNODE": 1}})
    done = client.wait(job, timeout=180)
    assert done.status == "COMPLETED", [e.message for e in client.get_job_logs(job)]
    assert done.node == NODE
    assert [e.message for e in client.get_job_logs(job)] == ["got-it"]

    work = sshd.home / ".sage-ops"
    for key in (work / f"tls-{NODE}" / tls.KEY, work / f"transit-{NODE}.key", work / f"ray-token-{NODE}"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    node_key = (work / f"tls-{NODE}" / tls.KEY).read_bytes()
    transit_key = (work / f"transit-{NODE}.key").read_bytes()
    assert transit_key == Path(d.state / "ray" / "transit.key").read_bytes()  # the head's, provisioned
    daemon_files = [p for p in d.home.rglob("*") if p.is_file() and not p.is_socket()]
    assert not any(node_key in p.read_bytes() for p in daemon_files)  # made on the node, never sent
    log = (d.state / "jobmanager.log").read_bytes()
    assert transit_key not in log and secret.encode() not in log
    assert not any(transit_key in c or b"PRIVATE KEY" in c for c in proc_files("cmdline").values())
    cmdlines = proc_files("cmdline")
    node_raylets = [env.split(b"\0") for pid, env in proc_files("environ").items()
                    if f"SAGE_OPS_NODE={NODE}".encode() in env.split(b"\0") and b"raylet" in cmdlines.get(pid, b"")]
    assert node_raylets and all(b"RAY_USE_TLS=1" in env for env in node_raylets)
    assert all(f"{transit.TRANSIT_ENV}={work}/transit-{NODE}.key".encode() in env for env in node_raylets)

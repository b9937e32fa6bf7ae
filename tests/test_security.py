"""Tenants, tokens, roles, quotas and hostile input, against a real daemon over its real sockets:
tenant isolation (404, never 403), revocation at once, viewers read-only, quotas that hold jobs
with the reason shown, TLS with a CA of the test's own, body limits, rate limits, secrets that
never reach the disk or the API in clear, and the peer uid of the Unix socket."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_until
from users import request_as

from sage_ops.client import JobManagerClient
from sage_ops.errors import DaemonUnavailable, Forbidden, Invalid, NotFound, RateLimited, Unauthorized
from sage_ops.server.scheduling.run_as import can_switch
from sage_ops.transport import Call
from sage_ops.workdir import pack

# A multi-user daemon (root) runs a tenant's token jobs as its run_as user: any unprivileged one
RUN_AS = ("--run-as", "nobody") if can_switch() else ()

def token_for(d: Daemon, *args: str) -> str:
    out = d.run("token", "create", *args, "--json", check=True)
    return json.loads(out.stdout)["token"]


def as_token(d: Daemon, token: str, **config: Any) -> JobManagerClient:
    """A client on the Unix socket that speaks with `token` (not the socket owner's uid)."""
    return JobManagerClient(f"unix://{d.socket}", config={"retry_attempts": 1, **config}, token=token)


@pytest.fixture(scope="module")
def tenants(ray_head: dict[str, str]) -> Any:
    d = Daemon(ray_head)
    d.start()
    d.run("tenant", "create", "alpha", *RUN_AS, check=True)
    d.run("tenant", "create", "beta", *RUN_AS, check=True)
    a = as_token(d, token_for(d, "--tenant", "alpha", "--name", "a-bot"))
    b = as_token(d, token_for(d, "--tenant", "beta", "--name", "b-bot"))
    try:
        yield d, a, b
    finally:
        d.cleanup()


def test_a_tenant_cannot_see_or_touch_another_tenants_jobs(tenants: Any) -> None:
    d, a, b = tenants
    mine = a.submit_command(["true"], name="alpha-job")
    theirs = b.submit_command(["sleep", "30"], name="beta-job")
    assert a.get_job(mine).tenant == "alpha"  # a member's job is its tenant's, said or not
    assert [j.id for j in a.list_jobs()] == [mine]
    assert a.list_jobs(tenant="beta") == []
    assert {j.id for j in d.client().list_jobs()} >= {mine, theirs}  # the owner (admin) sees all
    for call in (a.get_job, a.get_job_logs, a.get_job_result, a.get_job_graph, a.get_job_events, a.cancel_job,
                 a.retry_job, lambda j: a.set_priority(j, 5), lambda j: a.wait_once(j, 0)):
        with pytest.raises(NotFound, match=f"no such job: {theirs}"):
            call(theirs)
    bulk = a.cancel_jobs([theirs])
    assert not bulk.affected and bulk.errors[0]["code"] == "not_found"
    assert a.cancel_jobs(tenant="beta").affected == []
    assert b.get_job(theirs).status in ("PENDING", "RUNNING")  # untouched
    dep = a.submit_job({"command": ["true"], "dependencies": [theirs]})
    assert dep.status == "REJECTED" and dep.reason == f"unknown dependency: {theirs}"
    with pytest.raises(Forbidden, match="alpha only"):
        a.submit_job({"command": ["true"], "tenant": "beta"})
    stats = a.get_statistics()
    assert stats.total_jobs == 2  # its own two, not beta's
    assert a.whoami().tenant == "alpha" and a.whoami().role == "member"
    with pytest.raises(Forbidden):
        a.create_tenant("gamma")
    events = d.client().audit(actor=a.whoami().actor)
    denied = [e for e in events if e.action == "denied"]
    assert any(e.target == theirs and e.status == 404 for e in denied)
    assert any(e.action == "submit" and e.target == mine and e.status == 201 for e in events)
    out = d.run("audit", "--since", "1h", check=True).stdout
    assert "denied" in out and "a-bot" in out
    b.cancel_job(theirs)


def test_revoked_token_stops_working_at_once(tenants: Any) -> None:
    d, _, _ = tenants
    made = json.loads(d.run("token", "create", "--tenant", "alpha", "--name", "short-lived", "--json",
                            check=True).stdout)
    c = as_token(d, made["token"])
    assert c.whoami().actor == f"token:short-lived#{made['id']}"
    listed = d.run("token", "list", check=True).stdout
    assert "short-lived" in listed and made["token"] not in listed
    d.run("token", "revoke", str(made["id"]), check=True)
    with pytest.raises(Unauthorized, match="revoked"):
        c.whoami()
    assert d.run("token", "revoke", "--all", "--tenant", "beta", check=True).stdout.startswith("revoked 1 ")


def test_a_viewer_reads_but_cannot_submit(tenants: Any) -> None:
    d, _, _ = tenants
    v = as_token(d, token_for(d, "--tenant", "alpha", "--name", "dash", "--role", "viewer"))
    assert isinstance(v.list_jobs(), list)
    with pytest.raises(Forbidden, match="read-only"):
        v.submit_command(["true"])
    r = d.run("--token-file", "-", "submit", "--", "true", input=v.token)  # off the command line
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "read-only" in r.stderr


def test_a_token_over_its_rate_gets_429(tenants: Any) -> None:
    d, _, _ = tenants
    slow = as_token(d, token_for(d, "--tenant", "alpha", "--name", "slow", "--rate-limit", "1"))
    with pytest.raises(RateLimited, match="too many requests"):
        for _ in range(10):
            slow.whoami()


def test_quota_holds_the_third_job_with_the_reason_shown(tenants: Any) -> None:
    d, _, _ = tenants
    d.run("tenant", "create", "quota", "--max-running", "2", "--max-queued", "3", *RUN_AS, check=True)
    q = as_token(d, token_for(d, "--tenant", "quota", "--name", "q"))
    ids = [q.submit_command(["sleep", "60"], name=f"q{i}") for i in range(3)]
    wait_until(lambda: sum(q.get_job(i).status == "RUNNING" for i in ids) == 2)
    third = next(q.get_job(i) for i in ids if q.get_job(i).status != "RUNNING")
    wait_until(lambda: "max-running 2" in (q.get_job(third.id).reason or ""))
    assert q.get_job(third.id).status == "PENDING"
    shown = d.run("tenant", "list", check=True).stdout
    assert "quota" in shown and "2/2" in shown
    # max-queued 3: the one waiting plus two more fill it; the next is REJECTED with the reason
    extra = [q.submit_job({"command": ["sleep", "60"]}) for _ in range(3)]
    assert [j.status for j in extra[:2]] == ["PENDING", "PENDING"]
    assert extra[2].status == "REJECTED" and "max-queued 3" in extra[2].reason
    running = [i for i in ids if i != third.id]
    q.cancel_job(running[0])
    wait_until(lambda: q.get_job(third.id).status == "RUNNING")
    q.cancel_jobs(tenant="quota", status=["PENDING", "RUNNING"])


def test_a_100_mb_body_gets_413_and_the_daemon_carries_on(tenants: Any) -> None:
    d, _, _ = tenants
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://x", timeout=120) as h:
        r = h.post("/v1/jobs", content=b"x" * (100 * 1024 * 1024), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

        def chunks() -> Any:
            for _ in range(40):
                yield b"y" * (1024 * 1024)

        r = h.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})  # no length
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        assert h.get("/v1/health").json()["status"] == "ok"


def test_secret_env_is_never_stored_shown_or_logged_in_clear(tenants: Any) -> None:
    d, _, _ = tenants
    secret = "s3cr3t-Value-8d1f0a"
    digest = hashlib.sha256(secret.encode()).hexdigest()  # the job checks it without us writing it down
    jid = d.submit_q("--secret-env", f"API_KEY={secret}", "--", "sh", "-c",
                     f'echo "key is $API_KEY"; test "$(printf %s "$API_KEY" | sha256sum | cut -c1-64)" = {digest}')
    view = d.client().wait(jid, timeout=60)
    assert view.status == "COMPLETED"  # the job got the real value
    status = d.run("status", jid, "--json", check=True).stdout
    assert secret not in status and json.loads(status)["spec"]["secret_env"] == {"API_KEY": "***"}
    logs = d.run("logs", jid, check=True).stdout
    assert "key is ***" in logs and secret not in logs
    for f in [p for p in d.home.rglob("*") if p.is_file() and not p.is_socket()]:
        assert secret.encode() not in f.read_bytes(), f  # the database, WAL, job logs, daemon log


def _self_signed(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA of our own and a server certificate for 127.0.0.1 it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_tls_round_trip_with_a_ca_of_our_own(new_daemon: Any, tmp_path: Path) -> None:
    ca, cert, key = _self_signed(tmp_path)
    d = new_daemon()
    d.start("--tcp", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key))
    port = d.client().health_check().tcp.rsplit(":", 1)[1]
    admin = (d.home / "config" / "sage-ops" / "token").read_text().strip()
    c = JobManagerClient(f"https://127.0.0.1:{port}", config={"ca": str(ca), "retry_attempts": 1}, token=admin)
    assert c.health_check().status == "ok"
    assert c.whoami().role == "admin"
    jid = c.submit_command(["echo", "over tls"])
    assert c.wait(jid, timeout=60).status == "COMPLETED"
    r = d.run("--address", f"tcp://127.0.0.1:{port}", "--ca", str(ca), "jobs", check=True)
    assert jid in r.stdout
    with pytest.raises(DaemonUnavailable, match="not trusted"):  # not without the CA
        JobManagerClient(f"https://127.0.0.1:{port}", config={"retry_attempts": 1}, token=admin).health_check()
    with pytest.raises(DaemonUnavailable):  # plain HTTP is not answered
        JobManagerClient(f"tcp://127.0.0.1:{port}", config={"retry_attempts": 1}, token=admin).health_check()


def _as_uid(sock_path: Path, uid: int, path: str) -> tuple[int, dict[str, Any]]:
    return request_as(sock_path, uid, "GET", path)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another uid")
def test_the_socket_peer_uid_maps_to_a_tenant(new_daemon: Any) -> None:
    d = new_daemon({"security": {"socket_mode": "0666"}})
    d.start()
    for p in [d.socket.parent, *d.socket.parent.parents]:
        if str(p).startswith(str(d.home)) or p == d.home:
            p.chmod(0o755)
    nobody = 65534
    status, body = _as_uid(d.socket, nobody, "/v1/whoami")
    assert status == 401 and "not mapped" in body["error"]["message"]
    d.run("tenant", "create", "ops", check=True)
    a_job = d.client().submit_job({"command": ["true"], "tenant": "ops"}).id
    d.client().submit_command(["true"])  # the owner's own job, no tenant
    d.run("tenant", "add-user", "ops", str(nobody), check=True)
    status, body = _as_uid(d.socket, nobody, "/v1/whoami")
    assert status == 200 and body == {"actor": f"uid:{nobody}", "role": "member", "tenant": "ops", "via": "unix"}
    status, body = _as_uid(d.socket, nobody, "/v1/jobs")
    assert status == 200 and [j["id"] for j in body["jobs"]] == [a_job]
    mode = subprocess.run(["stat", "-c", "%a", str(d.socket)], capture_output=True, text=True).stdout.strip()
    assert mode == "666"


def test_a_tenant_cannot_use_or_probe_another_tenants_package(tenants: Any, tmp_path: Path) -> None:
    d, _, _ = tenants  # tokens of their own: the tenants' first ones may have been revoked by now
    a = as_token(d, token_for(d, "--tenant", "alpha", "--name", "a-packer"))
    b = as_token(d, token_for(d, "--tenant", "beta", "--name", "b-prober"))
    (tmp_path / "secret.py").write_text("KEY = 'alpha only'\n")
    a.submit_command(["true"], workdir=str(tmp_path), resources={"cpu": 0}, hold=True)
    sha = pack(tmp_path).sha256
    refused = []
    for call in (lambda: b._run(Call("GET", f"/v1/packages/{sha}", lambda x: x)),
                 lambda: b.submit_job({"command": ["true"], "package": {"sha256": sha, "size": 1}})):
        try:
            call()
        except (NotFound, Invalid) as exc:
            refused.append(type(exc).__name__)
    assert refused == ["NotFound", "Invalid"]

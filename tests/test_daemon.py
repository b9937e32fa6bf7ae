"""The daemon as a service: sockets and auth, bad requests, restarts that lose nothing."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest
from conftest import Daemon, wait_until

from sage_ops import AsyncJobManagerClient, JobManagerClient
from sage_ops.errors import DaemonUnavailable, NotFound, Unauthorized


def test_socket_is_owner_only(daemon: Daemon) -> None:
    mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
    assert mode == 0o600
    assert stat.S_ISSOCK(os.stat(daemon.socket).st_mode)


@pytest.mark.parametrize("body,content_type,status", [
    (b"{bad json", "application/json", 400),
    (b'{"command": ["true"], "unknown_field": 1}', "application/json", 422),
    (b'{"command": ["true"], "resources": {"memory": "8XB"}}', "application/json", 422),
    (b'{"command": []}', "application/json", 422),
    (b'{"command": ["echo", "\\ud800"]}', "application/json", 422),  # a lone surrogate: not UTF-8
    (b'{"kind": "script", "script": {"filename": "../x.py", "content": ""}}', "application/json", 422),
    (b'[1, 2]', "application/json", 422),
    (b"", "application/json", 422),
])
def test_malformed_requests_get_4xx_json(daemon: Daemon, body: bytes, content_type: str, status: int) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://x") as http:
        resp = http.post("/v1/jobs", content=body, headers={"content-type": content_type})
        assert resp.status_code == status, resp.text
        err = resp.json()["error"]
        assert err["code"] and err["message"] and "Traceback" not in err["message"]
        for path, method in (("/v1/jobs/nope", "GET"), ("/v1/nothing", "GET"), ("/v1/jobs/nope/cancel", "POST"),
                             ("/v1/jobs?limit=-5", "GET"), ("/v1/jobs?status=WHAT", "GET"), ("/v1/health", "DELETE")):
            r = http.request(method, path)
            assert 400 <= r.status_code < 500 and "error" in r.json(), (path, r.text)
        assert http.get("/v1/health").json()["status"] == "ok"


def test_a_batch_with_a_string_that_is_not_utf8_is_refused_naming_its_job(daemon: Daemon) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://x") as http:
        resp = http.post("/v1/jobs/batch", content=b'{"jobs": [{"command": ["true"]}, {"command": ["\\udfff"]}]}',
                         headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"]["message"].startswith("jobs[1]: a string in the job is not valid UTF-8")


def test_python_client_api(daemon: Daemon, tmp_path) -> None:  # noqa: ANN001
    script = tmp_path / "train.py"
    script.write_text("import sys\nfrom sage_ops.job import set_result\nprint('epochs', sys.argv[1])\n"
                      "set_result({'loss': 0.1})\n")
    with JobManagerClient(f"unix://{daemon.socket}", config={"timeout": 10, "retry_attempts": 2}) as client:
        job_id = client.submit_script(str(script), args=["3"], resources={"cpu": 1, "memory": "256MiB", "gpu": 0,
                                                                          "custom_resources": {}})
        view = client.wait(job_id, timeout=60)
        assert view["status"] == "COMPLETED" and client.get_job_status(job_id) == "COMPLETED"
        assert client.get_job_result(job_id) == {"loss": 0.1}
        logs = client.get_job_logs(job_id)
        assert logs[0].message == "epochs 3" and logs[0].timestamp.tzinfo is not None
        assert [e.message for e in client.stream_job_logs(job_id)] == ["epochs 3"]
        assert any(j.id == job_id for j in client.list_jobs(limit=1000))
        batch = client.submit_batch([{"command": ["true"]}, {"command": ["sleep", "30"], "name": "sleeper"}])
        assert len(batch) == 2 and all(j.status == "PENDING" for j in batch)
        assert client.cancel_job(batch[1].id).status == "CANCELLED"
        assert client.health_check().status == "ok"
        assert client.get_statistics()["active_jobs"] >= 0
        with pytest.raises(NotFound):
            client.get_job_status("nope")


async def test_async_client_api(daemon: Daemon) -> None:
    async with AsyncJobManagerClient(f"unix://{daemon.socket}") as client:
        job_id = await client.submit_command(["sh", "-c", "echo async-hello"])
        view = await client.wait(job_id, timeout=60)
        assert view.status == "COMPLETED"
        assert [e.message async for e in client.stream_job_logs(job_id)] == ["async-hello"]
        assert (await client.get_statistics())["total_jobs"] >= 1
        with pytest.raises(NotFound):
            await client.get_job_status("nope")


def test_unreachable_daemon_is_one_clear_line(daemon: Daemon, tmp_path) -> None:  # noqa: ANN001
    out = daemon.run("--address", f"unix://{tmp_path}/none.sock", "jobs")
    assert out.returncode == 3 and out.stderr.count("\n") == 1 and "cannot reach the sage-ops daemon" in out.stderr
    with pytest.raises(DaemonUnavailable):
        JobManagerClient(f"unix://{tmp_path}/none.sock", config={"retry_attempts": 1}).health_check()


def test_failover_to_the_next_address(daemon: Daemon, tmp_path) -> None:  # noqa: ANN001
    client = JobManagerClient(f"unix://{tmp_path}/dead.sock,unix://{daemon.socket}", config={"retry_attempts": 1})
    assert client.health_check().status == "ok"


def test_tcp_needs_a_token(new_daemon) -> None:  # noqa: ANN001
    d: Daemon = new_daemon()
    d.start("--tcp", "127.0.0.1:0")
    health = d.client().health_check()
    host_port = health.tcp
    assert host_port and host_port.startswith("127.0.0.1:")
    with httpx.Client(base_url=f"http://{host_port}") as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
            resp = http.get("/v1/jobs", headers=headers)
            assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
        assert http.post("/v1/jobs", json={"command": ["true"]}).status_code == 401
    token_file = d.home / "config" / "sage-ops" / "token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = token_file.read_text().strip()
    with pytest.raises(Unauthorized):
        JobManagerClient(f"tcp://{host_port}", token="wrong").list_jobs()
    assert JobManagerClient(f"tcp://{host_port}", token=token).health_check().status == "ok"
    d.env["SAGE_OPS_ADDRESS"] = f"tcp://{host_port}"  # the CLI reads the local token file
    job_id = d.submit_q("--", "true")
    assert d.run("wait", job_id).returncode == 0
    assert token not in (d.state / "jobmanager.log").read_text()


def test_stop_then_start_keeps_every_job_and_its_logs(new_daemon) -> None:  # noqa: ANN001
    d: Daemon = new_daemon()
    d.start()
    done = d.submit_q("--", "sh", "-c", "echo before-restart")
    assert d.run("wait", done).returncode == 0
    marker = d.home / "go"
    running = d.submit_q("--", "sh", "-c", f"echo started; while [ ! -e {marker} ]; do sleep 0.1; done; echo finished")
    wait_until(lambda: "started" in d.run("logs", running).stdout)
    before = json.loads(d.run("jobs", "--json").stdout)
    d.stop()
    assert not d.socket.exists()
    marker.touch()  # the job finishes while no daemon is up: Ray keeps it running
    d.start()
    assert d.run("wait", running).returncode == 0
    after = {j["id"]: j for j in json.loads(d.run("jobs", "--json").stdout)}
    assert {j["id"] for j in before} == set(after)
    assert after[running]["status"] == "COMPLETED" and len(after[running]["attempts"]) == 1
    status = json.loads(d.run("status", "--json", running).stdout)
    assert [a["number"] for a in status["attempts"]] == [1]  # ran once, not again
    assert d.run("logs", "--no-timestamps", running).stdout.split() == ["started", "finished"]
    assert "before-restart" in d.run("logs", done).stdout
    events = d.client().get_job_events(running)
    assert [e.to_status for e in events].count("COMPLETED") == 1


def test_full_queue_rejects_with_reason(new_daemon) -> None:  # noqa: ANN001
    d: Daemon = new_daemon({"jobmanager": {"max_jobs": 2}})
    d.start()
    first = [d.submit_q("--", "sleep", "30") for _ in range(2)]
    out = d.run("submit", "--", "true")
    assert out.returncode == 1 and "queue full" in out.stderr
    d.run("cancel", *first, check=True)
    assert d.run("submit", "--wait", "--", "true").returncode == 0


def test_second_daemon_on_the_same_state_is_refused(daemon: Daemon) -> None:
    out = daemon.run("daemon", "start")
    assert out.returncode == 0 and "already running" in out.stdout
    status = daemon.run("daemon", "status")
    assert status.returncode == 0 and "connected" in status.stdout


def test_two_daemons_on_one_sqlite_file_refuse(new_daemon) -> None:  # noqa: ANN001
    first: Daemon = new_daemon()
    shared = f"sqlite:///{first.home}/shared.db"
    first.start("--db", shared)
    second: Daemon = new_daemon()
    out = second.run("daemon", "start", "--db", shared, timeout=120)
    assert out.returncode == 1 and "another sage-ops daemon is using" in out.stderr, out.stderr
    assert first.run("health").returncode == 0

"""The SAGE JobManager document's examples (../shared/origin-examples.md), called as written there
(only the import path and the addresses differ), against a real daemon on a loopback TCP port
that needs a token: the token comes from the README's one command, in $SAGE_OPS_TOKEN. The
inputs the examples name come from examples/origin.py, the runnable copy, which is run too."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon, pid_alive, wait_until

from sage_ops import (
    AsyncJobManagerClient,
    FileSink,
    FileSource,
    JobManagerClient,
    JobManagerServer,
    JobStatus,
    RemoteEnvironment,
)
from sage_ops.errors import Conflict
from sage_ops.schemas import Resources, RetryPolicy
from sage_ops.server.backend.ray_backend import LocalHead

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
# the runnable copy of the examples, and their inputs: a file of this repository, not a package
origin = importlib.import_module("origin")
ProcessFunction = origin.ProcessFunction


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jobmanager(ray_head: dict[str, str]) -> Iterator[Daemon]:
    d = Daemon(ray_head, {"jobmanager": {"host": "127.0.0.1", "port": free_port()}})
    d.start()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="module")
def token(jobmanager: Daemon) -> str:
    """The README's one command: export SAGE_OPS_TOKEN=$(sage-ops token create --name notebook --role admin)."""
    return jobmanager.run("token", "create", "--name", "notebook", "--role", "admin", check=True).stdout.strip()


@pytest.fixture
def address(jobmanager: Daemon, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """"localhost:PORT", from a fresh directory holding the examples' inputs, with the token in
    $SAGE_OPS_TOKEN: where a user of the document stands."""
    monkeypatch.setenv("SAGE_OPS_TOKEN", token)
    monkeypatch.chdir(tmp_path)
    origin.write_inputs(tmp_path)
    port = jobmanager.client().health_check().tcp.rsplit(":", 1)[1]
    return f"localhost:{port}"


# -- Start the server ------------------------------------------------------------------------
def _serve(d: Daemon, port: int, err: Any) -> subprocess.Popen[str]:
    code = ('from sage_ops import JobManagerServer\n'
            f'server = JobManagerServer(\n    host="0.0.0.0",\n    port={port},\n    ray_address="auto"\n)\n'
            'server.start()\n')
    return subprocess.Popen([sys.executable, "-c", code], env=d.env, cwd=d.home, stdout=err, stderr=err)


def test_start_the_server_as_written(ray_head: dict[str, str], new_daemon: Any) -> None:
    d: Daemon = new_daemon()
    others = ray_head["SAGE_OPS_RAY__ADDRESS"]
    d.env["RAY_ADDRESS"] = others  # a cluster `auto` must not join just because it is named there
    d.env.update({"SAGE_OPS_RAY__INCLUDE_DASHBOARD": "false", "SAGE_OPS_RAY__NUM_CPUS": "1"})  # a light head
    port = free_port()
    out = d.home / "server.out"
    with open(out, "w") as f:
        proc = _serve(d, port, f)
    try:
        health = wait_until(lambda: _ready(d), timeout=180, interval=0.2)
        assert health.status == "ok"
        assert health.tcp == f"127.0.0.1:{port}"  # 0.0.0.0 without TLS: loopback only
        assert health.ray.address != others  # its own head, not $RAY_ADDRESS's
        assert health.ray.address.startswith("127.0.0.1:")
        assert httpx.get(f"http://127.0.0.1:{port}/v1/jobs").status_code == 401  # TCP needs a token
        assert JobManagerClient(f"localhost:{port}", token=_admin_token(d)).health_check().status == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
        LocalHead(d.state).stop()
    err = out.read_text()
    assert proc.returncode == 0
    assert "TCP on 127.0.0.1" in err and "needs TLS" in err  # the narrowing is said, in one line
    assert "SIGTERM handler" not in err  # no Ray noise on the terminal
    assert "Traceback" not in err


def _ready(d: Daemon) -> Any:
    try:
        health = d.client(retry_attempts=1, timeout=5).health_check()
    except Exception:  # noqa: BLE001 - not up yet
        return None
    return health if health.ray.connected and health.status == "ok" else None  # ok: also recovered


def _admin_token(d: Daemon) -> str:
    return (d.home / "config" / "sage-ops" / "token").read_text().strip()


def test_a_second_server_is_one_clear_error(jobmanager: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(key, jobmanager.env[key])
    server = JobManagerServer(host="0.0.0.0", port=free_port(), ray_address="auto")
    with pytest.raises(Conflict) as err:
        server.start()
    assert "a daemon is already running" in err.value.message
    assert "sage-ops daemon stop" in err.value.message  # and what to do about it
    assert "\n" not in err.value.message
    assert pid_alive(int((jobmanager.state / "daemon.pid").read_text()))  # the running one is untouched


def test_a_taken_port_is_one_clear_error(new_daemon: Any) -> None:
    d: Daemon = new_daemon()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-c", "from sage_ops import JobManagerServer\n"
                              f"JobManagerServer(host='127.0.0.1', port={port}, ray_address='auto').start()"],
                             env=d.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr == f"sage-ops daemon: cannot listen on 127.0.0.1:{port}: Address already in use\n"


@pytest.fixture
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file of this machine's user in the way."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SAGE_OPS_CONFIG", raising=False)


@pytest.mark.usefixtures("no_config")
def test_the_documents_addresses_are_kept_safe() -> None:
    cfg = JobManagerServer(host="0.0.0.0", port=19001, ray_address="auto", **{"ray.dashboard_host": "0.0.0.0"}).cfg
    assert cfg.jobmanager.host == "127.0.0.1"
    assert cfg.ray.dashboard_host == "127.0.0.1"
    assert cfg.ray.address == "auto"  # accepted; it means this daemon's own head


@pytest.mark.usefixtures("no_config")
def test_with_tls_the_wildcard_host_is_served(tmp_path: Path) -> None:
    from test_security import _self_signed

    _ca, cert, key = _self_signed(tmp_path)
    server = JobManagerServer(host="0.0.0.0", port=19001, ray_address="auto",
                              **{"security.tls_cert": str(cert), "security.tls_key": str(key)})
    assert server.cfg.jobmanager.host == "0.0.0.0"


# -- Submit a job, watch it, get its result ----------------------------------------------------
def test_submit_watch_and_get_the_result(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = origin.submit_watch_and_get_the_result(address)
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"Job {job_id} status: COMPLETED", "Job result: {'rows': 3, 'total': 6}"]
    assert json.loads(Path("result.json").read_text()) == {"rows": 3, "total": 6}  # ran in the caller's dir
    client = JobManagerClient(address)
    assert client.get_job_status(job_id) is JobStatus.COMPLETED
    assert client.get_job(job_id).spec.resources == Resources(cpu=4, memory="8GB")


async def test_the_async_client_answers_the_status_too(address: str) -> None:
    async with AsyncJobManagerClient(address) as client:
        job_id = await client.submit_command(["true"])
        await client.wait(job_id, timeout=60)
        assert await client.get_job_status(job_id) == "COMPLETED"


# -- A pipeline job --------------------------------------------------------------------------
EXPECTED = [{"key": "x", "value": 10}, {"key": "y", "value": 20}, {"key": "z", "value": 30}]


def _records(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_pipeline_job(address: str) -> None:
    job_id = origin.a_pipeline_job(address)
    assert _records(Path("output.json")) == EXPECTED  # input.csv and output.json of the caller's dir
    assert JobManagerClient(address).get_job(job_id).name == "data_pipeline"


def test_a_pipeline_in_the_environments_working_dir(address: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.replace("input.csv", data / "input.csv")
    env = RemoteEnvironment("data_pipeline", jobmanager_address=address, working_dir="data")
    env.source(FileSource, path="input.csv").map(ProcessFunction).sink(FileSink, path="output.json")
    env.wait_for_completion(env.submit())
    assert _records(data / "output.json") == EXPECTED


# -- Dependencies, resources, retries --------------------------------------------------------
def test_dependencies_run_in_order(address: str) -> None:
    client = JobManagerClient(address)
    job1, job2, job3 = origin.dependencies(client)
    assert Path("steps.txt").read_text().split() == ["preprocess.py", "train_model.py", "evaluate.py"]
    assert client.get_job(job3).spec.dependencies == [job2]
    assert client.get_job(job2).spec.dependencies == [job1]


def test_resources(address: str) -> None:
    client = JobManagerClient(address)
    job = client.get_job(origin.resources(client))
    assert job.spec.resources == Resources(cpu=16, memory="32GB", gpu=2, custom_resources={"TPU": 1})
    assert job.status is JobStatus.REJECTED  # this test cluster has 4 CPUs and no GPU or TPU
    assert "no node can ever hold" in (job.reason or "")


def test_retries(address: str) -> None:
    client = JobManagerClient(address)
    job_id = origin.retries(client)
    try:
        job = wait_until(lambda: (j := client.get_job(job_id)).status is JobStatus.PENDING and j.attempts_made
                         and j, timeout=120)  # the first attempt ran and failed; not FAILED: waiting
        assert job.spec.retry_policy == RetryPolicy(max_retries=3, retry_delay=60, retry_exponential_base=2)
        assert job.attempts_made == 1
        assert "retry 1 of 3 in 60s" in (job.reason or "")
    finally:
        client.cancel_job(job_id)


# -- Client configuration, health, statistics, logs ---------------------------------------------
def test_client_configuration(address: str) -> None:
    client = origin.client_configuration(address)
    assert client.config.connection_pool_size == 10
    assert client.config.heartbeat_interval == 60
    assert client.health_check().status == "ok"


def test_health_and_statistics(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    client = JobManagerClient(address)
    client.wait(client.submit_command(["true"]), timeout=60)
    origin.health_and_statistics(client)
    health, active, total = capsys.readouterr().out.splitlines()
    assert health.startswith("JobManager health: status='ok'")
    assert re.fullmatch(r"Active jobs: \d+", active)
    assert int(total.removeprefix("Total jobs: ")) >= 1


def test_logs(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    client = JobManagerClient(address)
    job_id = client.submit_command(["sh", "-c", "echo one; echo two"])
    client.wait(job_id, timeout=60)
    entries = client.get_job_logs(job_id)
    assert all(entry.timestamp.tzinfo is not None for entry in entries)
    origin.logs(client, job_id)
    lines = [f"[{entry.timestamp}] {entry.message}" for entry in entries]
    assert capsys.readouterr().out.splitlines() == lines + lines  # get_job_logs, then stream_job_logs
    assert [entry.message for entry in entries] == ["one", "two"]


# -- The runnable copy -----------------------------------------------------------------------
def test_examples_origin_runs(address: str, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "origin.py"), address], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "status: COMPLETED" in out.stdout
    assert "Ran in order: ['preprocess.py', 'train_model.py', 'evaluate.py']" in out.stdout

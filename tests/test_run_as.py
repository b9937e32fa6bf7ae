"""A job runs as its owner's Unix user on a multi-user daemon (root), never as the daemon.

Real parts: three Unix users made here (useradd, as root): tenants alpha and beta run their token
callers' jobs as two of them, the third reaches the socket as itself (tenant add-user). One
daemon with a Ray head of its own (so its Ray token and temp dir are its own). Beta runs a job that
holds a secret and sleeps; alpha runs a job that tries, as an attacker would, to read what is the
daemon's or beta's and to signal them. Each fact is a test of its own."""

from __future__ import annotations

import json
import os
import pwd
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Daemon, wait_until
from probe import lines, run_probe
from users import can_make_users, make_user, remove_user, request_as

from sage_ops.client import JobManagerClient
from sage_ops.errors import Forbidden, Invalid
from sage_ops.schemas import JobKind, JobSpec
from sage_ops.server.scheduling.run_as import RunAs

pytestmark = pytest.mark.skipif(not can_make_users() or shutil.which("setpriv") is None,
                                reason="needs root, useradd and setpriv to run jobs as other users")

SECRET = "beta-secret-7c1e"


def token_for(d: Daemon, *args: str) -> str:
    return json.loads(d.run("token", "create", *args, "--json", check=True).stdout)["token"]


def as_token(d: Daemon, token: str) -> JobManagerClient:
    return JobManagerClient(f"unix://{d.socket}", config={"retry_attempts": 1}, token=token)


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, pwd.struct_passwd]]:
    made = {name: make_user(f"sgo{name[0]}") for name in ("alpha", "beta", "gamma")}
    try:
        yield made
    finally:
        for user in made.values():
            remove_user(user)


@pytest.fixture(scope="module")
def multi(users: dict[str, pwd.struct_passwd]) -> Iterator[Daemon]:
    """The daemon, its socket in a directory others can reach (the state dir stays 0700)."""
    d = Daemon({}, {"ray": {"num_cpus": 2}, "security": {"socket_mode": "0666"}})
    run = d.home / "run"
    run.mkdir(mode=0o755)
    d.home.chmod(0o711)
    d.socket = run / "sage-ops.sock"
    d.env["SAGE_OPS_JOBMANAGER__SOCKET"] = str(d.socket)
    try:
        d.start("--tcp", "127.0.0.1:0")  # TCP: the daemon writes its local admin token
        d.run("tenant", "create", "alpha", "--run-as", users["alpha"].pw_name, check=True)
        d.run("tenant", "create", "beta", "--run-as", users["beta"].pw_name, check=True)
        d.run("tenant", "create", "gamma", check=True)
        d.run("tenant", "add-user", "gamma", users["gamma"].pw_name, check=True)
        yield d
    finally:
        d.run("daemon", "stop", "--ray", timeout=90)
        shutil.rmtree(d.home, ignore_errors=True)


@pytest.fixture(scope="module")
def beta_job(multi: Daemon) -> Iterator[dict[str, Any]]:
    """Beta's running job: it printed a line, holds a secret in its environment, and sleeps."""
    beta = as_token(multi, token_for(multi, "--tenant", "beta", "--name", "b"))
    script = 'echo beta-line; echo \'{"b": 1}\' > "$SAGE_OPS_RESULT_FILE"; dirname "$SAGE_OPS_RESULT_FILE"; sleep 600'
    view = beta.submit_job({"kind": "script", "script": {"filename": "beta.sh", "content": script},
                            "secret_env": {"TOKEN": SECRET}})
    wait_until(lambda: len(lines(beta, view.id)) >= 2, timeout=120)
    # its lines are on disk before its start is committed: wait for the attempt's row too
    job = wait_until(lambda: (j := beta.get_job(view.id)).attempts and j, timeout=60)
    yield {"id": view.id, "pid": job.attempts[-1].pid, "client": beta, "scratch": lines(beta, view.id)[1]}
    beta.cancel_job(view.id)


def files_of(d: Daemon, beta_id: str) -> dict[str, str]:
    """What alpha must not reach: the daemon's files and beta's, by path."""
    state, config = d.state, d.home / "config" / "sage-ops"
    logs = [p for p in d.home.rglob(f"*{beta_id}*")]
    assert logs, "beta's log file was not found"
    return {"database": str(state / "sage-ops.db"), "wal": str(state / "sage-ops.db-wal"),
            "state-dir": str(state), "sealing-key": str(config / "secret.key"),
            "admin-token": str(config / "token"), "ray-token": str(state / "ray" / "auth_token"),
            "beta-log": str(logs[0])}


@pytest.fixture(scope="module")
def targets(multi: Daemon, beta_job: dict[str, Any]) -> dict[str, str]:
    found = files_of(multi, beta_job["id"])
    pid = int((multi.state / "daemon.pid").read_text().split()[0])
    scratch = beta_job["scratch"]
    found.update({"beta-scratch": scratch, "beta-script": f"{scratch}/beta.sh",
                  "beta-result": f"{scratch}/result.json"})
    found.update({"beta-environ": f"/proc/{beta_job['pid']}/environ", "signal-daemon": f"kill:{pid}",
                  "signal-beta": f"kill:{beta_job['pid']}"})
    return found


@pytest.fixture(scope="module")
def probe(multi: Daemon, targets: dict[str, str]) -> dict[str, str]:
    """What alpha's job could reach."""
    return run_probe(as_token(multi, token_for(multi, "--tenant", "alpha", "--name", "a")), targets)


def test_the_probe_reaches_every_target_as_the_daemon(multi: Daemon, targets: dict[str, str]) -> None:
    """Each denial below is the OS boundary's, not a wrong path: the daemon's own job reaches all."""
    assert {k: v for k, v in run_probe(multi.client(), targets).items() if v != "OPEN"} == {}


def job_user(client: JobManagerClient, command: str = "id -un") -> str:
    view = client.submit_job({"command": ["sh", "-c", command]})
    assert client.wait(view.id, timeout=120).status == "COMPLETED"
    return lines(client, view.id)[0]


def test_health_says_multi_user(multi: Daemon) -> None:
    assert (multi.client().health_check().identity or "").startswith("multi-user")


def test_a_token_job_runs_as_its_tenants_run_as_user(multi: Daemon, users: dict[str, pwd.struct_passwd]) -> None:
    alpha = as_token(multi, token_for(multi, "--tenant", "alpha", "--name", "who"))
    assert job_user(alpha) == users["alpha"].pw_name


def test_its_home_is_the_run_as_users(multi: Daemon, users: dict[str, pwd.struct_passwd]) -> None:
    alpha = as_token(multi, token_for(multi, "--tenant", "alpha", "--name", "home"))
    assert job_user(alpha, "echo $HOME") == users["alpha"].pw_dir


def test_the_job_row_says_who_it_runs_as(multi: Daemon, users: dict[str, pwd.struct_passwd]) -> None:
    alpha = as_token(multi, token_for(multi, "--tenant", "alpha", "--name", "row"))
    view = alpha.submit_job({"command": ["true"], "run_as": "root"})  # what a request says is replaced
    assert alpha.get_job(view.id).spec.run_as == users["alpha"].pw_name


def test_a_socket_users_job_runs_as_that_user(multi: Daemon, users: dict[str, pwd.struct_passwd]) -> None:
    gamma = users["gamma"]
    status, body = request_as(multi.socket, gamma.pw_uid, "POST", "/v1/jobs", {"command": ["sh", "-c", "id -un"]},
                              gid=gamma.pw_gid)
    assert status == 201, body
    client = multi.client()
    assert client.wait(body["id"], timeout=120).status == "COMPLETED"
    assert lines(client, body["id"])[0] == gamma.pw_name


def test_the_daemon_owners_own_jobs_run_as_the_daemon(multi: Daemon) -> None:
    assert job_user(multi.client()) == "root"


def test_a_token_of_a_tenant_without_run_as_is_refused(multi: Daemon) -> None:
    g = as_token(multi, token_for(multi, "--tenant", "gamma", "--name", "no-run-as"))
    with pytest.raises(Forbidden, match="no run_as user"):
        g.submit_job({"command": ["true"]})


def test_a_pipeline_of_a_run_as_tenant_is_refused() -> None:
    """A pipeline drives the shared Ray cluster: only the daemon's own user may (the rule alone)."""
    spec = JobSpec.model_construct(kind=JobKind.PIPELINE, tenant="alpha")
    with pytest.raises(Forbidden, match="pipeline"):
        RunAs("on").for_job(spec, uid=None, admin=False, tenant_users={"alpha": "nobody"})


def test_root_is_refused_as_run_as(multi: Daemon) -> None:
    with pytest.raises(Invalid, match="root or the daemon"):
        multi.client().update_tenant("gamma", run_as="root")


def test_an_unknown_user_is_refused_as_run_as(multi: Daemon) -> None:
    with pytest.raises(Invalid, match="no such user"):
        multi.client().update_tenant("gamma", run_as="nosuchuser42")


def test_tenant_create_without_run_as_says_token_jobs_are_refused(multi: Daemon) -> None:
    assert "refused until it has one" in multi.run("tenant", "create", "delta", check=True).stderr


@pytest.mark.parametrize("target", ["database", "wal", "state-dir", "sealing-key", "admin-token", "ray-token",
                                    "beta-log", "beta-scratch", "beta-script", "beta-result", "beta-environ",
                                    "signal-daemon", "signal-beta"])
def test_another_tenants_job_cannot_reach(probe: dict[str, str], target: str) -> None:
    assert probe.get(target) == "denied"


def test_the_probe_ran_as_alpha_and_could_read_its_own_home(multi: Daemon) -> None:
    """The probe's denials are the OS boundary's, not a broken probe: it reads what it owns."""
    alpha = as_token(multi, token_for(multi, "--tenant", "alpha", "--name", "own"))
    out = job_user(alpha, 'echo x > "$HOME/mine" && head -c 1 "$HOME/mine" && echo')
    assert out == "x"


def test_a_scratch_result_file_of_the_user_is_read(multi: Daemon) -> None:
    alpha = as_token(multi, token_for(multi, "--tenant", "alpha", "--name", "result"))
    view = alpha.submit_job({"command": ["sh", "-c", 'echo \'{"ok": 1}\' > "$SAGE_OPS_RESULT_FILE"']})
    assert alpha.wait(view.id, timeout=120).status == "COMPLETED"
    assert alpha.get_job_result(view.id) == {"ok": 1}


def test_a_hard_link_to_a_file_it_cannot_read_is_not_a_result(multi: Daemon) -> None:
    """Linked to the daemon's token file (where the kernel allows such links): never read as root."""
    alpha = as_token(multi, token_for(multi, "--tenant", "alpha", "--name", "link"))
    target = multi.home / "config" / "sage-ops" / "token"
    view = alpha.submit_job({"command": ["sh", "-c", f'ln {target} "$SAGE_OPS_RESULT_FILE" 2>/dev/null; true']})
    assert alpha.wait(view.id, timeout=120).status == "COMPLETED"
    assert alpha.get_job_result(view.id) is None


def test_the_scratch_directory_is_gone_after_the_job(multi: Daemon) -> None:
    alpha = as_token(multi, token_for(multi, "--tenant", "alpha", "--name", "scratch"))
    view = alpha.submit_job({"command": ["sh", "-c", 'dirname "$SAGE_OPS_RESULT_FILE"']})
    assert alpha.wait(view.id, timeout=120).status == "COMPLETED"
    assert not os.path.exists(lines(alpha, view.id)[0])

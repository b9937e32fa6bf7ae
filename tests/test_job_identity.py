"""Jobs never run with the daemon's identity or credentials: a job starts from an allow-listed
environment (no RAY_*, no daemon SAGE_OPS_*, no XDG_*, no SSH_AUTH_SOCK; its run-as user's HOME),
and cancel ends every descendant, `setsid` ones too. Each one failed on the code before it.

The daemon here starts a Ray head of its own from a shell that holds what a real one would: an
SSH agent, an XDG session, a config file, the Ray token path its head hands to every worker.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from collections.abc import Iterator

import pytest
from conftest import Daemon

from sage_ops.server.dispatcher import LocalHead

DOCUMENTED = {"SAGE_OPS_JOB_ID", "SAGE_OPS_ATTEMPT", "SAGE_OPS_RESULT_FILE"}
MARKS = {"SAGE_OPS_RAY_HEAD", "SAGE_OPS_NODE"}  # process marks the leftover sweeps need: not secrets
PRINT_ENV = "import json, os; json.dump(dict(os.environ), open(os.environ['SAGE_OPS_RESULT_FILE'], 'w'))"


@pytest.fixture(scope="module")
def own(ray_head: dict[str, str]) -> Iterator[Daemon]:
    """A daemon with a Ray head of its own, started from a shell holding the starter's secrets."""
    d = Daemon({}, {"ray": {"num_cpus": 2}})
    d.env.update({"SSH_AUTH_SOCK": "/tmp/agent.sock", "XDG_SESSION_ID": "7", "XDG_DATA_HOME": str(d.home),
                  "SAGE_OPS_STORE__URL": f"sqlite:///{d.home}/elsewhere.db"})
    try:
        d.start()
        yield d
    finally:
        d.run("daemon", "stop", "--ray", timeout=90)
        shutil.rmtree(d.home, ignore_errors=True)


@pytest.fixture(scope="module")
def job_env(own: Daemon) -> dict[str, str]:
    """The environment a plain job saw."""
    client = own.client()
    view = client.submit_job({"command": [sys.executable, "-c", PRINT_ENV], "env": {"MINE": "kept"}})
    assert client.wait(view.id, timeout=120).status == "COMPLETED"
    return client.get_job_result(view.id)


def test_no_ray_variable_reaches_a_job(job_env: dict[str, str]) -> None:
    assert [k for k in job_env if k.startswith("RAY_")] == []


def test_no_daemon_sage_ops_variable_reaches_a_job(job_env: dict[str, str]) -> None:
    assert [k for k in job_env if k.startswith("SAGE_OPS_") and k not in DOCUMENTED | MARKS] == []


def test_no_xdg_variable_reaches_a_job(job_env: dict[str, str]) -> None:
    assert [k for k in job_env if k.startswith("XDG_")] == []


def test_the_ssh_agent_does_not_reach_a_job(job_env: dict[str, str]) -> None:
    assert "SSH_AUTH_SOCK" not in job_env


def test_no_value_names_the_ray_token_file(own: Daemon, job_env: dict[str, str]) -> None:
    token_path = str(LocalHead(own.state).token_path)
    assert [k for k, v in job_env.items() if token_path in v or str(own.state) in v] == []


def test_no_value_holds_the_ray_token(own: Daemon, job_env: dict[str, str]) -> None:
    token = LocalHead(own.state).token_path.read_text().strip()
    assert [k for k, v in job_env.items() if token in v] == []


def test_home_is_the_run_as_users(job_env: dict[str, str]) -> None:
    assert job_env["HOME"] == pwd.getpwuid(os.getuid()).pw_dir


def test_the_jobs_own_env_reaches_it(job_env: dict[str, str]) -> None:
    assert job_env["MINE"] == "kept"


def test_the_documented_variables_reach_it(job_env: dict[str, str]) -> None:
    assert set(job_env) >= DOCUMENTED

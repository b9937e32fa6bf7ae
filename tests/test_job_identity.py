"""Jobs never run with the daemon's identity or credentials: a job starts from an allow-listed
environment (no RAY_*, no daemon SAGE_OPS_*, no XDG_*, no SSH_AUTH_SOCK; its run-as user's HOME),
and cancel, timeout and the job's end reach every descendant, `setsid` ones too (a cgroup per
job, else a subreaper). Each one failed on the code before it.

The daemon here starts a Ray head of its own from a shell that holds what a real one would: an
SSH agent, an XDG session, a config file, the Ray token path its head hands to every worker.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Daemon, pid_alive, wait_until

from sage_ops.server.backend import containment
from sage_ops.server.backend.ray_backend import LocalHead

DOCUMENTED = {"SAGE_OPS_JOB_ID", "SAGE_OPS_ATTEMPT", "SAGE_OPS_RESTART_COUNT", "SAGE_OPS_RESULT_FILE"}
SOMETIMES = {"SAGE_OPS_WORKDIR"}  # documented, set only for some jobs (a shipped --workdir)
MARKS = {"SAGE_OPS_RAY_HEAD", "SAGE_OPS_NODE"}  # process marks the leftover sweeps need: not secrets
PRINT_ENV = "import json, os; json.dump(dict(os.environ), open(os.environ['SAGE_OPS_RESULT_FILE'], 'w'))"


@pytest.fixture(scope="module")
def own(ray_head: dict[str, str]) -> Iterator[Daemon]:
    """A daemon with a Ray head of its own, started from a shell holding the starter's secrets;
    single-user even as root (switch_users: off), as on a laptop (test_run_as has multi-user), and
    without the bubblewrap sandbox, whose PID namespace would hide the host pids these tests follow
    (test_sandbox has it)."""
    d = Daemon({}, {"ray": {"num_cpus": 2}, "security": {"switch_users": "off", "sandbox": "off"}})
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
    assert [k for k in job_env if k.startswith("SAGE_OPS_") and k not in DOCUMENTED | SOMETIMES | MARKS] == []


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


# -- containment: every descendant ends with the job ------------------------------------------

# a child that leaves the job's session and process group, its output not tied to the job
ESCAPE = "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!; "


def escaped_child(d: Daemon, job_id: str) -> int:
    """The pid the job printed: its `setsid` child."""
    def printed() -> int | None:
        lines = [e.message for e in d.client().get_job_logs(job_id) if e.message.strip().isdigit()]
        return int(lines[0]) if lines else None
    return wait_until(printed, timeout=120)


def test_cancel_ends_a_setsid_descendant(own: Daemon) -> None:
    client = own.client()
    job = client.submit_job({"command": ["sh", "-c", ESCAPE + "exec sleep 300"]}).id
    child = escaped_child(own, job)
    client.cancel_job(job)
    client.wait(job, timeout=120)
    assert wait_until(lambda: not pid_alive(child), timeout=30)


def test_timeout_ends_a_setsid_descendant(own: Daemon) -> None:
    client = own.client()
    job = client.submit_job({"command": ["sh", "-c", ESCAPE + "exec sleep 300"], "timeout": 3}).id
    child = escaped_child(own, job)
    client.wait(job, timeout=120)
    assert wait_until(lambda: not pid_alive(child), timeout=30)


def test_the_end_of_a_job_ends_its_setsid_descendant(own: Daemon) -> None:
    client = own.client()
    job = client.submit_job({"command": ["sh", "-c", ESCAPE + "sleep 1"]}).id
    child = escaped_child(own, job)
    client.wait(job, timeout=120)
    assert wait_until(lambda: not pid_alive(child), timeout=30)


def test_health_says_which_containment_is_in_force(own: Daemon) -> None:
    health = json.loads(own.run("health", "--json", check=True).stdout)
    assert health["containment"] == containment.mode()


def test_the_health_table_names_the_containment(own: Daemon) -> None:
    assert f"containment  {containment.mode()}" in own.run("health", check=True).stdout


@pytest.mark.skipif(not containment.mode().startswith("cgroup v1")
                    or not os.access("/sys/fs/cgroup/memory", os.W_OK), reason="needs a writable cgroup v1 memory")
def test_a_memory_request_is_the_jobs_memory_limit(own: Daemon) -> None:
    read_limit = ("path = [l.split(':')[2] for l in open('/proc/self/cgroup') if ':memory:' in l][0].strip();"
                  "print(open('/sys/fs/cgroup/memory' + path + '/memory.limit_in_bytes').read().strip())")
    client = own.client()
    job = client.submit_job({"command": [sys.executable, "-c", read_limit],
                             "resources": {"memory": 256 * 1024 * 1024}}).id
    client.wait(job, timeout=120)
    assert [e.message for e in client.get_job_logs(job) if e.stream == "stdout"] == [str(256 * 1024 * 1024)]


# A job born in its cgroups from a thread of a busy process (as in a Ray worker), in a process of its own.
BORN_IN = textwrap.dedent("""
    import json, subprocess, threading
    from sage_ops.server.backend import containment

    def cgroups(path):
        return {l.split(":")[1]: l.split(":")[2].strip() for l in open(path)}

    def spawn(out):
        jail = containment.Jail("t-1", cpu=1, memory=64 << 20)
        with jail.spawning():
            proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
        out.update(child=cgroups(f"/proc/{proc.pid}/cgroup"), thread=cgroups("/proc/thread-self/cgroup"),
                   jail=jail.dirs)
        jail.leader = proc.pid
        jail.close()

    out = {}
    worker = threading.Thread(target=spawn, args=(out,))
    worker.start()
    worker.join()
    print(json.dumps({**out, "main": cgroups("/proc/thread-self/cgroup")}))
""")


@pytest.fixture(scope="module")
def born_in() -> dict[str, Any]:
    if not containment.mode().startswith("cgroup v1") or not os.access("/sys/fs/cgroup/memory", os.W_OK):
        pytest.skip("needs a writable cgroup v1")
    out = subprocess.run([sys.executable, "-c", BORN_IN], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_a_job_is_born_in_its_memory_cgroup(born_in: dict[str, Any]) -> None:
    assert "/sys/fs/cgroup/memory" + born_in["child"]["memory"] == born_in["jail"]["memory"]


def test_a_job_is_born_in_its_tracking_cgroup(born_in: dict[str, Any]) -> None:
    assert "/sys/fs/cgroup/freezer" + born_in["child"]["freezer"] == born_in["jail"]["freezer"]


def test_the_forking_thread_goes_back_to_its_cgroups(born_in: dict[str, Any]) -> None:
    assert born_in["thread"] == born_in["main"]


# The fallback where no cgroup is writable, run in a process of its own (it becomes a subreaper).
SUBREAPER = textwrap.dedent("""
    import os, subprocess, sys, time
    from sage_ops.server.backend import containment
    containment.Layout.kind, containment.Layout.bases = "subreaper", {}
    containment._set_subreaper()
    jail = containment.Jail("t-1")
    with jail.spawning():
        proc = subprocess.Popen(["sh", "-c", sys.argv[1] + "exec sleep 300"], stdout=subprocess.PIPE,
                                start_new_session=True)
    child = int(proc.stdout.readline())
    jail.leader = proc.pid
    proc.kill(); proc.wait()
    jail.close()
    print(child)
""")


def test_the_subreaper_fallback_ends_a_setsid_descendant() -> None:
    out = subprocess.run([sys.executable, "-c", SUBREAPER, ESCAPE], capture_output=True, text=True, timeout=60,
                         check=True)
    assert not pid_alive(int(out.stdout.split()[-1]))


# -- single-user mode says what it is -----------------------------------------------------------

SHARED = "single-user: every tenant's jobs run as"


def test_health_says_all_tenants_share_the_daemons_os_user(own: Daemon) -> None:
    assert json.loads(own.run("health", "--json", check=True).stdout)["identity"].startswith(SHARED)


def test_tenant_create_says_all_tenants_share_the_daemons_os_user(own: Daemon) -> None:
    assert SHARED in own.run("tenant", "create", "solo", check=True).stderr


def test_tenant_add_user_says_all_tenants_share_the_daemons_os_user(own: Daemon) -> None:
    own.run("tenant", "create", "duo", check=True)
    assert SHARED in own.run("tenant", "add-user", "duo", "nobody", check=True).stderr


# A stand-in Ray worker that dies under its job: its watchdog ends the job's cgroup and removes it.
DYING_WORKER = textwrap.dedent("""
    import json, os, subprocess, sys
    from sage_ops.server.backend.containment import Jail
    from sage_ops.server.backend.process_group import Watchdog
    Watchdog.ready()
    jail = Jail("dying-1", cpu=1.0)
    with jail.spawning():
        proc = subprocess.Popen(["sh", "-c", sys.argv[1] + "exec sleep 300"], stdout=subprocess.PIPE,
                                start_new_session=True)
    Watchdog.tell("+", proc.pid, jail.cgroups())
    print(json.dumps({"child": int(proc.stdout.readline()), "cgroups": jail.cgroups()}), flush=True)
    os._exit(9)
""")


@pytest.fixture(scope="module")
def dead_worker() -> dict[str, Any]:
    if not containment.mode().startswith("cgroup"):
        pytest.skip("no writable cgroup here: the subreaper has no cgroup to remove")
    out = subprocess.run([sys.executable, "-c", DYING_WORKER, ESCAPE], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.splitlines()[-1])


def test_a_dead_workers_watchdog_ends_the_setsid_descendant(dead_worker: dict[str, Any]) -> None:
    assert wait_until(lambda: not pid_alive(dead_worker["child"]), timeout=30)


def test_a_dead_workers_watchdog_removes_the_jobs_cgroups(dead_worker: dict[str, Any]) -> None:
    assert wait_until(lambda: not any(os.path.exists(p) for p in dead_worker["cgroups"]), timeout=30)

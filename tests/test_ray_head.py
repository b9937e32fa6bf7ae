"""`daemon stop --ray`, `daemon status` and `doctor` against a daemon that starts its own local Ray
head, as a user's does (real Ray, dashboard included: ~600 MB, so one daemon for the module).

The daemon is stopped once without --ray (the head stays, by design, and doctor reports it left
behind), then with --ray; each test asserts one fact of what was seen along the way."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, pid_alive, wait_until

from sage_ops import rayhead


def ps() -> dict[int, tuple[int, int, str]]:
    """Every live process as ps(1) shows it: pid -> (session id, parent pid, command)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,ppid=,stat=,args="], capture_output=True, text=True,
                         check=True).stdout
    rows = {}
    for line in out.splitlines():
        pid, sid, ppid, stat, *cmd = line.split(None, 4)
        if not stat.startswith("Z"):
            rows[int(pid)] = (int(sid), int(ppid), " ".join(cmd))
    return rows


def core_of(state_dir: Path) -> list[int]:
    """The head's lasting processes (GCS server, raylet): its workers come and go as other tests
    run, so only these say whether it was touched."""
    procs = rayhead.processes()
    return [pid for pid in rayhead.find(state_dir, procs).pids
            if pid in procs and any(name in procs[pid].cmdline for name in ("gcs_server", "raylet"))]


@pytest.fixture(scope="module")
def seen(ray_head: dict[str, str]) -> Iterator[dict[str, Any]]:
    """One daemon with a head of its own, through its life: what each step showed."""
    root = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))  # ray.temp_root: at most 16 bytes
    d = Daemon({}, {"ray": {"num_cpus": 1, "temp_root": str(root)}})  # no SAGE_OPS_RAY__ADDRESS: its own head
    shared_root = Path(ray_head["RAY_AUTH_TOKEN_PATH"]).parent.parent
    facts: dict[str, Any] = {"shared_before": core_of(shared_root), "temp_root": root}
    try:
        d.start()
        record = rayhead.load_record(d.state) or {}
        facts["record"] = record
        facts["current_cluster"] = (Path(record["temp_dir"]) / "ray_current_cluster").exists()
        job = d.submit_q("--", "sleep", "3600")  # a job of its own session, on the head: stopped with it

        def job_pid() -> int | None:
            attempts = d.client().get_job(job).attempts
            return attempts[-1].pid if attempts else None

        facts["job_pid"] = wait_until(job_pid, timeout=120)
        facts["status_before"] = json.loads(d.run("daemon", "status", "--json").stdout)
        facts["ps_before"] = {pid: row for pid, row in ps().items() if row[0] == record.get("session")}
        facts["status_table"] = d.run("daemon", "status").stdout
        # a daemon that cannot stop (frozen): --ray must fail, and leave the head to the daemon
        pid = facts["status_before"]["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            facts["stuck"] = d.run("daemon", "stop", "--ray", "--timeout", "1", timeout=90)
            facts["head_while_stuck"] = rayhead.find(d.state).running
        finally:
            os.kill(pid, signal.SIGCONT)  # the SIGTERM it got now stops it
        wait_until(lambda: not pid_alive(pid), timeout=90)
        d.start()  # takes its head back
        facts["plain_stop"] = d.run("daemon", "stop", timeout=90)
        facts["after_plain_stop"] = rayhead.find(d.state).pids
        facts["doctor"] = {c["check"]: c for c in json.loads(d.run("doctor", "--json").stdout)}
        facts["status_no_daemon"] = d.run("daemon", "status", "--json")
        facts["stop_ray"] = d.run("daemon", "stop", "--ray", timeout=90)
        facts["ps_after"] = ps()
        facts["status_after"] = d.run("daemon", "status", "--json")
        facts["doctor_after"] = {c["check"]: c for c in json.loads(d.run("doctor", "--json").stdout)}
        facts["stop_ray_again"] = d.run("daemon", "stop", "--ray", timeout=90)
        facts["shared_after"] = core_of(shared_root)
        yield facts
    finally:
        d.run("daemon", "stop", "--ray", timeout=90)
        shutil.rmtree(d.home, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def test_the_heads_temp_dir_is_under_ray_temp_root(seen: dict[str, Any]) -> None:
    assert Path(seen["record"]["temp_dir"]).parent.parent == seen["temp_root"]


def test_the_daemon_records_the_session_of_its_head(seen: dict[str, Any]) -> None:
    assert len(seen["ps_before"]) > 5  # gcs_server, raylet, dashboard, log monitor, workers...


def test_status_shows_the_head_running(seen: dict[str, Any]) -> None:
    assert seen["status_before"]["ray_head"]["running"] is True


def test_status_shows_the_head_address(seen: dict[str, Any]) -> None:
    assert seen["status_before"]["ray_head"]["address"] == seen["status_before"]["ray"]["address"]


def test_status_lists_every_process_of_the_heads_session(seen: dict[str, Any]) -> None:
    assert set(seen["ps_before"]) - set(seen["status_before"]["ray_head"]["pids"]) == set()


def test_status_lists_the_jobs_running_on_the_head(seen: dict[str, Any]) -> None:
    assert seen["job_pid"] in seen["status_before"]["ray_head"]["pids"]


def test_status_shows_the_head_memory(seen: dict[str, Any]) -> None:
    assert seen["status_before"]["ray_head"]["memory_bytes"] > 100 * 2**20


def test_status_says_which_memory(seen: dict[str, Any]) -> None:
    assert seen["status_before"]["ray_head"]["memory_kind"] in ("PSS", "RSS")


def test_status_table_shows_the_head(seen: dict[str, Any]) -> None:
    assert f"Ray head of this state dir at {seen['record']['address']}: " in seen["status_table"]


def test_a_plain_stop_leaves_the_head_running(seen: dict[str, Any]) -> None:
    core = {pid for pid, row in seen["ps_before"].items() if "gcs_server" in row[2] or "raylet/raylet" in row[2]}
    assert core - set(seen["after_plain_stop"]) == set()


def test_a_plain_stop_says_how_to_stop_the_head(seen: dict[str, Any]) -> None:
    assert "sage-ops daemon stop --ray" in seen["plain_stop"].stdout


def test_doctor_reports_the_head_left_behind(seen: dict[str, Any]) -> None:
    check = seen["doctor"]["ray-head"]
    assert (check["status"], "left behind" in check["detail"]) == ("WARN", True), check


def test_doctor_gives_the_command_that_stops_it(seen: dict[str, Any]) -> None:
    assert seen["doctor"]["ray-head"]["fix"].startswith("sage-ops daemon stop --ray")


def test_status_without_a_daemon_still_shows_the_head(seen: dict[str, Any]) -> None:
    proc = seen["status_no_daemon"]
    assert (proc.returncode, json.loads(proc.stdout)["ray_head"]["running"]) == (3, True)


def test_stop_ray_exits_1_when_the_daemon_does_not_stop(seen: dict[str, Any]) -> None:
    assert seen["stuck"].returncode == 1


def test_stop_ray_says_so_in_one_line(seen: dict[str, Any]) -> None:
    assert seen["stuck"].stderr.splitlines() == [f"error: the daemon (pid {seen['status_before']['pid']}) did not "
                                                 "stop within 1s; its Ray head was left running"]


def test_stop_ray_leaves_the_head_of_a_daemon_still_running(seen: dict[str, Any]) -> None:
    assert seen["head_while_stuck"] is True


def test_stop_ray_exits_0(seen: dict[str, Any]) -> None:
    assert seen["stop_ray"].returncode == 0, seen["stop_ray"].stderr


def test_stop_ray_says_what_it_stopped(seen: dict[str, Any]) -> None:
    assert f"Ray head stopped ({seen['record']['address']}" in seen["stop_ray"].stdout


def test_stop_ray_leaves_no_process_of_the_head(seen: dict[str, Any]) -> None:
    survivors = {pid: row for pid, row in seen["ps_after"].items()
                 if pid in seen["ps_before"] or row[0] == seen["record"]["session"]}
    assert survivors == {}


def test_stop_ray_stops_the_jobs_running_on_the_head(seen: dict[str, Any]) -> None:
    assert seen["job_pid"] not in seen["ps_after"]


def test_stop_ray_leaves_nothing_reparented_to_init(seen: dict[str, Any]) -> None:
    temp = seen["record"]["temp_dir"]
    orphans = {pid: row for pid, row in seen["ps_after"].items() if row[1] == 1 and temp in row[2]}
    assert orphans == {}


def test_the_head_wrote_ray_current_cluster_in_its_temp_dir(seen: dict[str, Any]) -> None:
    assert seen["current_cluster"] is True


def test_stop_ray_removes_the_temp_dir(seen: dict[str, Any]) -> None:
    assert not Path(seen["record"]["temp_dir"]).exists()


def test_status_after_shows_no_head(seen: dict[str, Any]) -> None:
    assert json.loads(seen["status_after"].stdout)["ray_head"]["running"] is False, seen["status_after"]


def test_doctor_after_finds_no_head(seen: dict[str, Any]) -> None:
    assert seen["doctor_after"]["ray-head"]["status"] == "OK"


def test_stop_ray_with_nothing_left_is_fine(seen: dict[str, Any]) -> None:
    proc = seen["stop_ray_again"]
    assert (proc.returncode, proc.stdout.splitlines()[-1]) == (0, "no Ray head of this state dir was running")


def test_another_state_dirs_head_is_never_touched(seen: dict[str, Any]) -> None:
    assert seen["shared_after"] == seen["shared_before"]


def test_another_state_dirs_head_was_seen(seen: dict[str, Any]) -> None:
    assert len(seen["shared_before"]) >= 2


def test_a_process_that_exited_is_not_alive_while_it_waits_to_be_reaped() -> None:
    """`daemon stop` waits for this: an orphaned daemon's zombie may wait seconds for pid 1."""
    child = subprocess.Popen(["true"])
    wait_until(lambda: Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
    try:
        assert rayhead.alive(child.pid) is False
    finally:
        child.wait()


def test_a_running_process_is_alive() -> None:
    assert rayhead.alive(os.getpid()) is True

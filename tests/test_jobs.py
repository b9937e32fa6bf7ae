"""Jobs end to end through the CLI: real daemon, real Ray tasks, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import Daemon, pid_alive, wait_until

SCRIPT = textwrap.dedent("""
    import sys
    from sage_ops.job import set_result
    print("args:", " ".join(sys.argv[1:]))
    print("to stderr", file=sys.stderr)
    set_result({"sum": 1 + 2, "args": sys.argv[1:]})
""")


def test_script_with_args_completes_with_logs_and_result(daemon: Daemon) -> None:
    script = daemon.home / "my_analysis.py"
    script.write_text(SCRIPT)
    out = daemon.run("submit", "--json", "--cpu", "1", "--memory", "512MiB", "--name", "analysis",
                     str(script), "--", "--input", "data.csv", check=True)
    job = json.loads(out.stdout)
    assert job["status"] == "PENDING" and job["name"] == "analysis" and job["kind"] == "script"
    assert job["spec"]["resources"]["memory"] == 512 * 2**20
    assert job["spec"]["script"]["filename"] == "my_analysis.py"  # the content travels, not the path
    assert daemon.run("wait", job["id"]).returncode == 0
    status = json.loads(daemon.run("status", "--json", job["id"], check=True).stdout)
    for key in ("id", "name", "status", "reason", "exit_code", "created_at", "started_at", "ended_at", "spec",
                "attempts"):
        assert key in status
    assert status["status"] == "COMPLETED" and status["exit_code"] == 0
    (attempt,) = status["attempts"]
    assert attempt["number"] == 1 and attempt["exit_code"] == 0 and attempt["node"] and attempt["started_at"]
    assert json.loads(daemon.run("result", job["id"], check=True).stdout) == {"sum": 3,
                                                                              "args": ["--input", "data.csv"]}
    logs = daemon.run("logs", job["id"], check=True).stdout
    assert "args: --input data.csv" in logs and "[stderr] to stderr" in logs
    entries = [json.loads(line) for line in daemon.run("logs", "--json", job["id"]).stdout.splitlines()]
    assert {e["stream"] for e in entries} == {"stdout", "stderr"} and all(e["timestamp"] for e in entries)


def test_failing_job_keeps_exit_code_and_stderr(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--", "sh", "-c", "echo something broke >&2; exit 3")
    waited = daemon.run("wait", job_id)
    assert waited.returncode == 3 and "FAILED" in waited.stdout  # the job's own exit code, as srun passes it on
    status = json.loads(daemon.run("status", "--json", job_id).stdout)
    assert status["status"] == "FAILED" and status["exit_code"] == 3 and "exit code 3" in status["reason"]
    assert status["attempts"][0]["exit_code"] == 3
    assert "something broke" in daemon.run("logs", job_id).stdout
    assert daemon.run("result", job_id).returncode == 1


def test_submit_wait_streams_output_and_sets_exit_code(daemon: Daemon) -> None:
    ok = daemon.run("submit", "--wait", "--", "python", "-c", "print('hi')")
    assert ok.returncode == 0 and "hi" in ok.stdout and "COMPLETED" in ok.stderr
    bad = daemon.run("submit", "--wait", "--", "false")
    assert bad.returncode == 1 and "FAILED" in bad.stderr


def _tree_job(daemon: Daemon) -> tuple[str, int, int]:
    """A running job whose leader has a child in the background: (job id, leader pid, child pid)."""
    job_id = daemon.submit_q("--", "sh", "-c", "sleep 300 & echo child=$!; sleep 300")

    def child_pid() -> int | None:
        for line in daemon.run("logs", job_id).stdout.splitlines():
            if "child=" in line:
                return int(line.split("child=")[1])
        return None

    child = wait_until(child_pid)
    leader = json.loads(daemon.run("status", "--json", job_id).stdout)["attempts"][0]["pid"]
    return job_id, leader, child


def test_cancel_running_job_kills_the_whole_tree(daemon: Daemon) -> None:
    job_id, leader, child = _tree_job(daemon)
    assert pid_alive(child) and pid_alive(leader)
    out = daemon.run("cancel", job_id, check=True)
    assert "CANCELLED" in out.stdout
    wait_until(lambda: not pid_alive(child) and not pid_alive(leader))
    status = json.loads(daemon.run("status", "--json", job_id).stdout)
    assert status["status"] == "CANCELLED"
    assert daemon.run("cancel", job_id).returncode == 0  # already ended: idempotent, with a note


def test_cancel_pending_job(daemon: Daemon) -> None:
    blockers = [daemon.submit_q("--cpu", "4", "--", "sleep", "60") for _ in range(2)]
    queued = daemon.submit_q("--cpu", "4", "--", "true")
    assert json.loads(daemon.run("status", "--json", queued).stdout)["status"] == "PENDING"
    assert daemon.run("cancel", queued, *blockers).returncode == 0
    assert json.loads(daemon.run("status", "--json", queued).stdout)["status"] == "CANCELLED"


def test_unsatisfiable_resources_are_rejected_with_reason(daemon: Daemon) -> None:
    out = daemon.run("submit", "--json", "--gpu", "1", "--resource", "TPU=1", "--command", "--", "./train.sh")
    assert out.returncode == 1 and "rejected" in out.stderr and "no node can ever hold" in out.stderr
    job = json.loads(out.stdout)
    assert job["status"] == "REJECTED" and "GPU=1" in job["reason"]
    big = daemon.run("submit", "--memory", "100TB", "--", "true")
    assert big.returncode == 1 and "memory" in big.stderr
    events = daemon.client().get_job_events(job["id"])
    assert [(e.from_status, e.to_status) for e in events] == [(None, "REJECTED")]  # refused as it was submitted


def test_unknown_job_id_is_a_clear_error(daemon: Daemon) -> None:
    for cmd in (["status", "nope"], ["logs", "nope"], ["result", "nope"], ["cancel", "nope"], ["wait", "nope"]):
        out = daemon.run(*cmd)
        assert out.returncode == 1, cmd
        assert out.stderr.strip() == "error: no such job: nope", (cmd, out.stderr)
        assert "Traceback" not in out.stderr


def test_usage_errors_exit_2_with_one_line(daemon: Daemon) -> None:
    for args in (["submit"], ["submit", "--memory", "lots", "--", "true"], ["jobs", "--status", "BOGUS"],
                 ["submit", "--resource", "TPU", "--", "true"], ["frobnicate"]):
        out = daemon.run(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error:"), out.stderr


def test_jobs_listing_filters_and_json(daemon: Daemon) -> None:
    a = daemon.submit_q("--name", "listed-a", "--", "true")
    daemon.run("wait", a)
    listed = json.loads(daemon.run("jobs", "--json", "--status", "COMPLETED", "--limit", "500").stdout)
    assert a in {j["id"] for j in listed} and all(j["status"] == "COMPLETED" for j in listed)
    assert len(json.loads(daemon.run("jobs", "--json", "--limit", "1").stdout)) == 1
    named = json.loads(daemon.run("jobs", "--json", "--name", "listed-*").stdout)
    assert [j["id"] for j in named] == [a]
    assert a in daemon.run("jobs").stdout


def test_logs_follow_sees_every_line_and_ends_with_the_job(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--", "sh", "-c", "for i in 1 2 3 4 5; do echo line-$i; sleep 0.2; done; echo last")
    out = daemon.run("logs", "-f", "--no-timestamps", job_id, timeout=60)
    assert out.returncode == 0
    assert out.stdout.split() == [f"line-{i}" for i in range(1, 6)] + ["last"]


def test_health_and_stats(daemon: Daemon) -> None:
    health = json.loads(daemon.run("health", "--json", check=True).stdout)
    assert health["status"] == "ok" and health["database"]["ok"] and health["ray"]["connected"]
    assert health["ray"]["resources"]["CPU"] == 4
    before = json.loads(daemon.run("stats", "--json", check=True).stdout)["failed_last_hour"]
    failing = daemon.submit_q("--", "false")
    daemon.run("wait", failing)
    stats = json.loads(daemon.run("stats", "--json", check=True).stdout)
    assert stats["total_jobs"] == sum(stats["by_status"].values()) and "active_jobs" in stats
    assert stats["failed_last_hour"] == before + 1  # the header's "failed in 1h"
    assert "running" in daemon.run("stats").stdout
    assert "connected" in daemon.run("health").stdout


def test_every_transition_leaves_an_event(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--", "true")
    daemon.run("wait", job_id)
    events = daemon.client().get_job_events(job_id)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, "PENDING"), ("PENDING", "RUNNING"), ("RUNNING", "COMPLETED")]  # admitted as it was submitted
    assert events[1].attempt == 1


def test_worker_death_fails_the_attempt_and_kills_its_tree(daemon: Daemon) -> None:
    """A Ray worker that dies (OOM killer, crash) takes the job's whole process group with it,
    and the attempt ends FAILED with the reason, not stuck RUNNING."""
    job_id, leader, child = _tree_job(daemon)
    worker = int(Path(f"/proc/{leader}/stat").read_text().split(")")[-1].split()[1])  # the leader's parent
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not pid_alive(child) and not pid_alive(leader))
    view = json.loads(daemon.run("wait", "--json", job_id).stdout)
    job = view[0] if isinstance(view, list) else view
    assert job["status"] == "FAILED" and job["reason"]


def test_a_job_group_dies_when_ray_kills_its_worker_and_the_workers_children(tmp_path: Path) -> None:
    """Ray's force-kill of a worker (ray.cancel(force=True)) also SIGKILLs the worker's direct
    children: the job's leader, and once the watchdog too, which left the job's other processes
    running. Here a stand-in worker registers a job with the watchdog, then its direct children
    and itself are killed the way Ray does it; the job's whole group must die."""
    worker = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "from sage_ops.server.backend.process_group import Watchdog\n"
        "job = subprocess.Popen(['sh', '-c', 'sleep 300 & echo $!; sleep 300'], stdout=subprocess.PIPE,"
        " start_new_session=True, text=True)\n"
        "Watchdog.tell('+', job.pid)\n"
        "print(job.pid, job.stdout.readline().strip(), flush=True)\n"
        "time.sleep(300)\n")], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    leader, child = map(int, worker.stdout.readline().split())
    assert pid_alive(leader) and pid_alive(child)
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    for pid in map(int, children):  # what Ray does to a force-killed worker's children
        os.kill(pid, signal.SIGKILL)
    worker.kill()
    worker.wait()
    wait_until(lambda: not pid_alive(child) and not pid_alive(leader))

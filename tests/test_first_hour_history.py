"""History a user can work with (issue 22): attempts in `jobs -o json`, each attempt's CPU time
and peak memory, `-o csv`, `logs --attempt N` and the marks between attempts, and the README's
word on the environment a job gets. Real daemon, real Ray tasks, real SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import textwrap
import time
from pathlib import Path
from typing import Any

from conftest import Daemon
from sqlalchemy import event

from sage_ops.lifecycle import JobStatus
from sage_ops.server.storage import store as st
from sage_ops.server.storage.job_output import encode_lines
from sage_ops.server.storage.logs import LogStore
from sage_ops.server.storage.store import Store

README = Path(__file__).resolve().parent.parent / "README.md"
# a job that fails its first attempt and completes its second, saying which one it is
RETRIED = ["--retries", "1", "--", "sh", "-c", 'echo "run $SAGE_OPS_ATTEMPT"; [ "$SAGE_OPS_ATTEMPT" = 2 ]']
# CPU burnt and memory held by a grandchild the job waits for: the whole tree is measured
BURN = textwrap.dedent("""
    import subprocess, sys
    print("pid 1 here:", open("/proc/1/comm").read().strip())
    child = ("b = bytearray(160 * 2**20)\\nimport time\\nt = time.process_time()\\n"
             "while time.process_time() - t < 0.6: pass")
    sys.exit(subprocess.run([sys.executable, "-c", child]).returncode)
""")


def _ended(d: Daemon, job_id: str) -> dict[str, Any]:
    d.run("wait", job_id, timeout=120)
    return json.loads(d.run("status", job_id, "-o", "json", check=True).stdout)


def _rows(conn: Any) -> None:
    now = time.time()
    jobs = [{"id": f"job{i}", "seq": i, "name": f"n{i}", "tenant": None, "status": "FAILED", "priority": 0,
             "kind": "command", "spec": "", "attempts_made": 2, "created_at": now, "updated_at": now}
            for i in range(1, 4)]
    st.insert_jobs(conn, jobs, [])
    for i in range(1, 4):
        for number in (1, 2):
            st.insert_attempt(conn, {"job_id": f"job{i}", "number": number, "status": "RUNNING", "started_at": now})
            st.update_attempt(conn, f"job{i}", number, {"status": "FAILED", "ended_at": now, "cpu_seconds": 1.5,
                                                        "max_rss_bytes": 3 * 2**40})


def _listed_with_queries(store: Store) -> tuple[list[Any], list[str]]:
    with store.engine.begin() as conn:
        _rows(conn)
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        with store.engine.connect() as conn:
            views, _next = st.list_jobs(conn, limit=100)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    return views, [s for s in seen if re.search(r"\bFROM attempt\b", s)]


# -- 1. attempts in the listing --------------------------------------------------------------------
def test_jobs_json_lists_each_jobs_attempts(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--name", "hist-listed", *RETRIED)
    _ended(daemon, job_id)
    listed = {j["id"]: j for j in json.loads(daemon.run("jobs", "-o", "json", check=True).stdout)}
    assert [a["number"] for a in listed[job_id]["attempts"]] == [1, 2]


def test_a_page_reads_its_attempts_in_one_query(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        views, queries = _listed_with_queries(store)
    finally:
        store.close()
    assert len(queries) == 1
    assert [[a.number for a in v.attempts] for v in views] == [[1, 2]] * 3


def test_the_usage_columns_and_the_listing_on_postgresql(postgres: Any) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    store = Store(postgres())
    try:
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
        views, queries = _listed_with_queries(store)
    finally:
        store.close()
    assert len(queries) == 1
    assert views[0].attempts[1].max_rss_bytes == 3 * 2**40  # past 32 bits: a BIGINT


# -- 2. CPU time and peak memory per attempt ----------------------------------------------------------
def test_an_attempt_records_the_cpu_time_and_peak_memory_of_its_tree(daemon: Daemon) -> None:
    script = daemon.home / "burn.py"
    script.write_text(BURN)
    job = _ended(daemon, daemon.submit_q("--name", "hist-burn", str(script)))
    attempt = job["attempts"][0]
    assert job["status"] == JobStatus.COMPLETED.value
    assert attempt["cpu_seconds"] >= 0.6
    assert attempt["max_rss_bytes"] >= 160 * 2**20


def test_a_sandboxed_attempt_is_measured_through_its_own_pid_namespace(new_daemon: Any) -> None:
    d = new_daemon({"security": {"switch_users": "off", "sandbox": "auto"}})  # bwrap --unshare-pid
    d.start()
    script = d.home / "burn.py"
    script.write_text(BURN)
    job = _ended(d, d.submit_q("--name", "hist-sandboxed", str(script)))
    attempt = job["attempts"][0]
    assert "pid 1 here: bwrap" in d.run("logs", job["id"], "--no-timestamps", check=True).stdout
    assert attempt["cpu_seconds"] >= 0.6
    assert attempt["max_rss_bytes"] >= 160 * 2**20


def test_status_and_history_show_cpu_and_max_rss(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--name", "hist-shown", "--", "true")
    _ended(daemon, job_id)
    for command in ("status", "history"):
        header = next(line for line in daemon.run(command, job_id, check=True).stdout.splitlines()
                      if line.lstrip().startswith("#"))
        assert re.search(r"\bCPU\s+MAX RSS\b", header), command


# -- 3. CSV ----------------------------------------------------------------------------------------
def test_csv_quotes_what_needs_quoting() -> None:
    from sage_ops.cli.output import csv_text

    rows = [{"id": "a", "reason": 'said "no", twice\nthen stopped', "exit_code": None, "spec": {"x": 1}}]
    back = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert back == [{"id": "a", "reason": 'said "no", twice\nthen stopped', "exit_code": ""}]


def test_csv_cells_that_start_like_a_formula_stay_text() -> None:
    """Another tenant's job name must not become a formula in the spreadsheet of whoever exports."""
    from sage_ops.cli.output import csv_text

    back = list(csv.DictReader(io.StringIO(csv_text([{"name": '=HYPERLINK("http://x")', "exit_code": -9}]))))
    assert back == [{"name": '\'=HYPERLINK("http://x")', "exit_code": "-9"}]


def test_jobs_csv_has_a_header_and_a_row_per_job_with_its_usage(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--name", "hist-csv", "--", "true")
    _ended(daemon, job_id)
    out = daemon.run("jobs", "-o", "csv", "--name", "hist-csv", check=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["id"], r["status"]) for r in rows] == [(job_id, "COMPLETED")]
    assert float(rows[0]["cpu_seconds"]) >= 0


def test_an_empty_jobs_csv_has_the_same_header(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--name", "hist-header", "--", "true")
    _ended(daemon, job_id)
    full = daemon.run("jobs", "-o", "csv", "--name", "hist-header", check=True).stdout.splitlines()[0]
    assert daemon.run("jobs", "-o", "csv", "--name", "no-such-job-name", check=True).stdout == full + "\n"


# -- 4. logs of one attempt, and marks between attempts ---------------------------------------------------
def test_logs_attempt_shows_only_that_attempts_lines(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--name", "hist-logs", *RETRIED)
    _ended(daemon, job_id)
    out = daemon.run("logs", job_id, "--attempt", "2", "--no-timestamps", check=True).stdout
    assert [line for line in out.splitlines() if line.startswith("run ")] == ["run 2"]


def test_logs_mark_where_the_next_attempt_begins(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--name", "hist-marks", *RETRIED)
    _ended(daemon, job_id)
    lines = daemon.run("logs", job_id, "--no-timestamps", check=True).stdout.splitlines()
    mark = lines.index("── attempt 2 (retry 1 of 1) ──")
    assert lines.index("run 1") < mark < lines.index("run 2")


def test_logs_json_says_each_lines_attempt_and_filters_by_it(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--name", "hist-json", *RETRIED)
    _ended(daemon, job_id)
    entries = [json.loads(x) for x in daemon.run("logs", job_id, "-o", "json", "--attempt", "1",
                                                 check=True).stdout.splitlines()]
    assert {e["attempt"] for e in entries} == {1}


def test_the_python_client_reads_one_attempts_lines(daemon: Daemon) -> None:
    job_id = daemon.submit_q("--name", "hist-client", *RETRIED)
    _ended(daemon, job_id)
    client = daemon.client()
    assert [e.message for e in client.get_job_logs(job_id, attempt=2) if e.message.startswith("run ")] == ["run 2"]
    assert {e.attempt for e in client.stream_job_logs(job_id, follow=False, attempt=1)} == {1}


def test_tail_of_one_attempt_counts_among_its_lines(tmp_path: Path) -> None:
    logs = LogStore(tmp_path)
    for n in range(6):
        logs.append_bytes("j1", encode_lines([(1e9 + n, "stdout", f"line {n}", 1 + n % 2)]))
    data = b"".join(logs.blocks("j1", tail=2, attempt=1))
    assert [json.loads(x)["message"] for x in data.splitlines()] == ["line 2", "line 4"]


# -- 5. the environment a job gets -----------------------------------------------------------------------
def test_a_job_gets_no_variable_of_the_submitters_shell(daemon: Daemon) -> None:
    script = daemon.home / "env.sh"
    script.write_text('#!/bin/sh\necho "mine=${SUBMITTER_ONLY:-unset} given=$GIVEN"\n')
    env_before = dict(daemon.env)
    daemon.env["SUBMITTER_ONLY"] = "from-my-shell"
    try:
        job_id = daemon.submit_q("--env", "GIVEN=yes", str(script))
    finally:
        daemon.env = env_before
    _ended(daemon, job_id)
    assert "mine=unset given=yes" in daemon.run("logs", job_id, "--no-timestamps", check=True).stdout


def test_readme_names_every_variable_a_job_gets() -> None:
    from sage_ops.server.backend import job_env

    section = README.read_text().split("### Inside a job", 1)[1].split("\n### ", 1)[0]
    names = [*job_env.PASSED, *job_env.login(os.getuid()), "SAGE_OPS_JOB_ID", "SAGE_OPS_ATTEMPT",
             "SAGE_OPS_RESULT_FILE", "PYTHONUNBUFFERED"]
    assert [n for n in names if f"`{n}`" not in section] == []
    assert "submitter" in section

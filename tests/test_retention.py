"""Retention (issue 27): which finished jobs go and which stay, in batches, with what hangs off them,
audited and fenced, checked in milliseconds on a real SQLite file with backdated end times (no
daemon); then `sage-ops gc` on a real daemon: its dry run, a sweep, and what it leaves."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

from sage_ops.errors import Invalid
from sage_ops.server.services.leadership import NotLeader
from sage_ops.server.services.retention import Retention
from sage_ops.server.storage import job_retention as jr
from sage_ops.server.storage import package_use
from sage_ops.server.storage import store as st
from sage_ops.server.storage.blobs import BlobStore
from sage_ops.server.storage.database import ATTEMPT, AUDIT, DEP, EVENT, IDEM, JOB, PIPELINE
from sage_ops.server.storage.job_counts import counts_by_status
from sage_ops.server.storage.logs import LogStore
from sage_ops.server.storage.results import STORED, ResultStore
from sage_ops.workdir import package_key

NOW = 2_000_000_000.0
DAY = 86400.0
OLD, RECENT = NOW - 40 * DAY, NOW - DAY  # ended 40 days ago / yesterday
CUTOFF = NOW - 30 * DAY


def job(job_id: str, status: str = "COMPLETED", ended: float | None = OLD, **extra: Any) -> dict[str, Any]:
    return st.new_job_row(**{"id": job_id, "seq": abs(hash(job_id)) % 10**9, "name": job_id, "status": status,
                             "kind": "command", "spec": "{}", "created_at": OLD - DAY, "updated_at": ended or OLD,
                             "ended_at": ended, **extra})


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database, made once and copied by each test (migrations cost more than a test)."""
    path = tmp_path_factory.mktemp("retention") / "template.db"
    st.Store(f"sqlite:///{path}", "OFF").close()
    return path


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Iterator[st.Store]:
    shutil.copy(template, tmp_path / "sage-ops.db")
    s = st.Store(f"sqlite:///{tmp_path / 'sage-ops.db'}", "OFF")
    yield s
    s.close()


def put(s: st.Store, jobs: list[dict[str, Any]], edges: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
    """Jobs with an event and an attempt each, and edges (job, the job it waits for)."""
    with s.engine.begin() as conn:
        st.insert_jobs(conn, jobs, [{"job_id": j["id"], "time": OLD, "from_status": None, "to_status": j["status"],
                                     "reason": None, "attempt": 0} for j in jobs],
                       [{"job_id": a, "depends_on": b} for a, b in edges])
        for j in jobs:
            st.insert_attempt(conn, {"job_id": j["id"], "number": 1, "status": j["status"]})


def sweep(s: st.Store, limit: int = 1000, cutoff: float = CUTOFF) -> list[jr.Batch]:
    """A whole sweep as the service runs it: steps from an empty cursor until done."""
    out, cursor = [], {}
    while True:
        with s.engine.begin() as conn:
            batch = jr.expire(conn, cutoff, cursor, limit, "test", NOW)
        out.append(batch)
        cursor = batch.cursor
        if batch.done:
            return out


def ids(s: st.Store, table: Any = JOB, column: str = "id") -> set[str]:
    with s.engine.connect() as conn:
        return set(conn.execute(table.select().with_only_columns(table.c[column])).scalars())


# -- what goes, what stays -------------------------------------------------------------------
def test_a_finished_job_that_ended_before_the_cutoff_goes(store: st.Store) -> None:
    put(store, [job("old"), job("recent", ended=RECENT)])
    sweep(store)
    assert ids(store) == {"recent"}


@pytest.mark.parametrize("status", ["SUBMITTED", "PENDING", "RUNNING"])
def test_an_unfinished_job_stays_however_old(store: st.Store, status: str) -> None:
    put(store, [job("live", status=status, ended=None)])
    sweep(store)
    assert ids(store) == {"live"}


@pytest.mark.parametrize("status", ["FAILED", "CANCELLED", "REJECTED"])
def test_every_terminal_status_goes(store: st.Store, status: str) -> None:
    put(store, [job("old", status=status)])
    sweep(store)
    assert ids(store) == set()


def test_a_job_an_unfinished_job_waits_for_stays(store: st.Store) -> None:
    put(store, [job("dep"), job("waiter", status="PENDING", ended=None)], [("waiter", "dep")])
    sweep(store)
    assert "dep" in ids(store)


def test_a_job_kept_for_a_waiter_is_counted_as_kept(store: st.Store) -> None:
    put(store, [job("dep"), job("waiter", status="PENDING", ended=None)], [("waiter", "dep")])
    assert sum(b.kept for b in sweep(store)) == 1


def test_a_job_whose_waiters_finished_goes_and_the_waiters_edge_stays(store: st.Store) -> None:
    put(store, [job("dep"), job("waiter", ended=RECENT)], [("waiter", "dep")])
    sweep(store)
    assert (ids(store), ids(store, DEP, "depends_on")) == ({"waiter"}, {"dep"})


def test_an_arrays_tasks_go_with_it(store: st.Store) -> None:
    put(store, [job("arr", array_id="arr"), job("t0", array_id="arr", array_index=0),
                job("t1", array_id="arr", array_index=1, ended=RECENT)])
    sweep(store)
    assert ids(store) == set()


def test_a_finished_task_of_an_unfinished_array_stays(store: st.Store) -> None:
    put(store, [job("arr", status="RUNNING", ended=None, array_id="arr"), job("t0", array_id="arr", array_index=0)])
    sweep(store)
    assert ids(store) == {"arr", "t0"}


def test_an_array_one_of_whose_tasks_an_unfinished_job_waits_for_stays_whole(store: st.Store) -> None:
    put(store, [job("arr", array_id="arr"), job("t0", array_id="arr", array_index=0),
                job("waiter", status="PENDING", ended=None)], [("waiter", "t0")])
    sweep(store)
    assert ids(store) == {"arr", "t0", "waiter"}


def test_nothing_of_a_deleted_job_is_left_behind(store: st.Store) -> None:
    put(store, [job("old"), job("dep")], [("old", "dep")])
    with store.engine.begin() as conn:
        st.put_pipeline_stats(conn, {"job_id": "old", "attempt": 1, "data": "[]", "updated_at": OLD})
    sweep(store)
    assert [ids(store, t, "job_id") for t in (ATTEMPT, EVENT, DEP, PIPELINE)] == [set()] * 4


def test_the_counts_by_status_follow(store: st.Store) -> None:
    put(store, [job("old"), job("recent", ended=RECENT), job("failed", status="FAILED")])
    sweep(store)
    with store.engine.connect() as conn:
        assert counts_by_status(conn) == {"COMPLETED": 1}


def test_submit_keys_made_before_the_cutoff_go(store: st.Store) -> None:
    put(store, [job("old")])
    with store.engine.begin() as conn:
        st.claim_key(conn, "k-old", "d", ["old"], OLD - DAY)
        st.claim_key(conn, "k-new", "d", ["x"], RECENT)
    sweep(store)
    assert ids(store, IDEM, "key") == {"k-new"}


def test_a_submit_key_still_valid_stays_under_a_short_retention(store: st.Store) -> None:
    put(store, [job("old", ended=NOW - 3600)])
    with store.engine.begin() as conn:
        st.claim_key(conn, "k-hour", "d", ["old"], NOW - 2 * 3600)  # made 2 h ago: valid for 22 h more
    sweep(store, cutoff=NOW - 60)
    assert ids(store, IDEM, "key") == {"k-hour"}


# -- batches ---------------------------------------------------------------------------------
def test_a_batch_holds_at_most_its_limit_of_rows(store: st.Store) -> None:
    put(store, [job(f"j{i}", ended=OLD + i) for i in range(5)])
    assert [len(b.ids) for b in sweep(store, limit=2)] == [2, 2, 1]


def test_jobs_that_ended_at_the_same_moment_go_across_batches(store: st.Store) -> None:
    put(store, [job("dep"), job("waiter", status="PENDING", ended=None), *(job(f"j{i}") for i in range(4))],
        [("waiter", "dep")])
    sweep(store, limit=1)
    assert ids(store) == {"dep", "waiter"}


def test_an_array_larger_than_a_batch_goes_alone_and_whole(store: st.Store) -> None:
    put(store, [job("a", ended=OLD - 1), job("arr", array_id="arr"),
                *(job(f"t{i}", array_id="arr", array_index=i) for i in range(3))])
    assert [sorted(b.ids) for b in sweep(store, limit=2) if b.ids] == [["a"], ["arr", "t0", "t1", "t2"]]


def test_each_batch_leaves_one_audit_record(store: st.Store) -> None:
    put(store, [job(f"j{i}", ended=OLD + i) for i in range(5)])
    sweep(store, limit=2)
    with store.engine.connect() as conn:
        assert conn.execute(AUDIT.select().where(AUDIT.c.action == jr.AUDIT_ACTION)).all().__len__() == 3


def test_a_sweep_passes_a_kept_job_once(store: st.Store) -> None:
    put(store, [job("dep"), job("waiter", status="PENDING", ended=None),
                *(job(f"j{i}", ended=OLD + i) for i in range(4))], [("waiter", "dep")])
    assert sum(b.kept for b in sweep(store, limit=1)) == 1


def test_a_dry_run_takes_the_same_jobs_and_deletes_none(store: st.Store) -> None:
    put(store, [job("old"), job("recent", ended=RECENT)])
    with store.engine.connect() as conn:
        batch = jr.take(conn, CUTOFF, {}, 1000)
    assert (batch.ids, ids(store)) == (["old"], {"old", "recent"})


# -- the service: logs, fencing, its age -----------------------------------------------------
class Leading:
    is_leader = True


def service(s: st.Store, root: Path, age: float | None = 30 * DAY,
            results: ResultStore | None = None, blobs: BlobStore | None = None) -> tuple[Retention, LogStore]:
    logs = LogStore(root / "logs")
    return Retention(s, logs, Leading(), age, 1000, clock=lambda: NOW, results=results,  # type: ignore[arg-type]
                     blobs=blobs), logs


def test_a_sweep_deletes_the_jobs_logs(store: st.Store, tmp_path: Path) -> None:
    put(store, [job("old")])
    svc, logs = service(store, tmp_path)
    logs.append_bytes("old", b'{"x": 1}\n')
    asyncio.run(svc.sweep(None, "test"))
    assert not logs.path("old").exists()


def test_a_dry_run_counts_the_logs_bytes_and_deletes_nothing(store: st.Store, tmp_path: Path) -> None:
    put(store, [job("old")])
    svc, logs = service(store, tmp_path)
    logs.append_bytes("old", b"0123456789\n")
    report = asyncio.run(svc.sweep(None, "test", dry_run=True))
    assert (report.jobs, report.log_bytes, ids(store), logs.path("old").exists()) == (1, 11, {"old"}, True)


def test_a_sweep_deletes_a_result_kept_in_the_shared_store(store: st.Store, tmp_path: Path) -> None:
    put(store, [job("old", result=STORED), job("small", result="1")])
    results = ResultStore(BlobStore(f"file://{tmp_path / 'blobs'}"), 64)
    results.blobs.put(results.key("old"), b"[1]")
    svc, _ = service(store, tmp_path, results=results)
    asyncio.run(svc.sweep(None, "test"))
    assert not (tmp_path / "blobs" / results.key("old")).exists()


def test_without_an_age_or_a_retention_a_sweep_is_refused(store: st.Store, tmp_path: Path) -> None:
    svc, _ = service(store, tmp_path, age=None)
    with pytest.raises(Invalid):
        asyncio.run(svc.sweep(None, "test"))


def test_a_deposed_leader_deletes_nothing(store: st.Store, tmp_path: Path) -> None:
    put(store, [job("old")])
    svc, _ = service(store, tmp_path)

    def refuse(_conn: Any) -> None:
        raise NotLeader("deposed")

    store.fence = refuse
    with pytest.raises(NotLeader):
        asyncio.run(svc.sweep(None, "test"))
    assert ids(store) == {"old"}


# -- `sage-ops gc` on a real daemon ----------------------------------------------------------
@pytest.fixture(scope="module")
def aged(daemon: Daemon) -> dict[str, Any]:
    """Two finished jobs backdated 40 days (one of them waited for by a held job), a dry run, then
    a sweep of what ended more than 30 days ago."""
    old, dep = daemon.submit_q("echo", "kept-until-gc"), daemon.submit_q("true")
    daemon.run("wait", old, dep, check=True)
    waiter = daemon.submit_q("--hold", "--after", dep, "true")
    log = LogStore(daemon.state / "storage" / "logs").path(old)
    with sqlite3.connect(daemon.state / "sage-ops.db") as db:
        db.execute("UPDATE job SET ended_at = ended_at - ? WHERE id IN (?, ?)", (40 * DAY, old, dep))
    had_log = log.exists()
    dry = json.loads(daemon.run("gc", "--dry-run", "--older-than", "30d", "--json", check=True).stdout)
    after_dry = daemon.run("status", old).returncode
    swept = json.loads(daemon.run("gc", "--older-than", "30d", "--json", check=True).stdout)
    return {"old": old, "dep": dep, "waiter": waiter, "log": log, "had_log": had_log, "dry": dry,
            "after_dry": after_dry, "swept": swept}


def test_gc_dry_run_counts_the_old_job_alone(aged: dict[str, Any]) -> None:
    assert (aged["dry"]["jobs"], aged["dry"]["kept"]) == (1, 1)


def test_gc_dry_run_deletes_nothing(aged: dict[str, Any]) -> None:
    assert aged["after_dry"] == 0


def test_gc_deletes_the_old_jobs_row(daemon: Daemon, aged: dict[str, Any]) -> None:
    assert daemon.run("status", aged["old"]).returncode == 1


def test_gc_deletes_the_old_jobs_log(aged: dict[str, Any]) -> None:
    assert (aged["had_log"], aged["log"].exists()) == (True, False)


def test_gc_keeps_a_job_a_waiting_job_waits_for(daemon: Daemon, aged: dict[str, Any]) -> None:
    assert daemon.run("status", aged["dep"]).returncode == 0


def test_gc_leaves_an_audit_record(daemon: Daemon, aged: dict[str, Any]) -> None:
    events = json.loads(daemon.run("audit", "--action", jr.AUDIT_ACTION, "-o", "json", check=True).stdout)
    assert [e["target"] for e in events] == ["1 jobs"]


def test_gc_without_an_age_or_a_retention_is_a_usage_error(daemon: Daemon) -> None:
    proc = daemon.run("gc", "--dry-run")
    assert (proc.returncode, len(proc.stderr.strip().splitlines())) == (2, 1)


# -- shipped packages: the ones unused since the cutoff go -----------------------------------------
SHA_OLD, SHA_NEW, SHA_RUNNING = "a" * 64, "b" * 64, "c" * 64


def packages(store: st.Store, tmp_path: Path, dry_run: bool = False) -> tuple[set[str], int]:
    """Three packages of tenant t1: used long ago, used yesterday, used long ago by a running job."""
    blobs = BlobStore(f"file://{tmp_path / 'blobs'}")
    for sha, used in ((SHA_OLD, OLD), (SHA_NEW, RECENT), (SHA_RUNNING, OLD)):
        blobs.put(package_key(sha, "t1"), b"tar")
        package_use.mark_used(blobs, sha, "t1", used)
    put(store, [job("run", status="RUNNING", ended=None, tenant="t1",
                    spec=json.dumps({"package": {"sha256": SHA_RUNNING, "size": 3}}, separators=(",", ":")))])
    svc, _ = service(store, tmp_path, blobs=blobs)
    report = asyncio.run(svc.sweep(None, "test", dry_run=dry_run))
    return {k.split("/")[-1][:1] for k in blobs.keys("packages") if k.endswith(".tar.gz")}, report.packages


def test_a_package_unused_since_the_cutoff_goes(store: st.Store, tmp_path: Path) -> None:
    assert packages(store, tmp_path) == ({"b", "c"}, 1)


def test_a_dry_run_counts_the_packages_and_deletes_none(store: st.Store, tmp_path: Path) -> None:
    assert packages(store, tmp_path, dry_run=True) == ({"a", "b", "c"}, 1)


def test_a_package_deleted_is_audited(store: st.Store, tmp_path: Path) -> None:
    packages(store, tmp_path)
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT target FROM {AUDIT.name} WHERE action = 'retention'").fetchall()
    assert [r[0] for r in rows] == ["1 packages"]


def test_a_package_never_submitted_starts_its_clock_when_found(tmp_path: Path) -> None:
    blobs = BlobStore(f"file://{tmp_path / 'blobs'}")
    blobs.put(package_key(SHA_OLD, None), b"tar")
    assert (package_use.stale(blobs, NOW), blobs.exists(package_use.mark_key(SHA_OLD, None))) == ([], True)

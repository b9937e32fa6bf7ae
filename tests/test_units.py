"""Rules that need no daemon: the lifecycle table, sizes, specs, addresses, config."""

from __future__ import annotations

from datetime import datetime

import pytest

from sage_ops.client import parse_addresses
from sage_ops.config import load_config
from sage_ops.errors import Conflict, Invalid, NotFound, Rejected, from_response
from sage_ops.lifecycle import TERMINAL, JobStatus, is_legal, is_terminal, transition
from sage_ops.schemas import JobSpec, Resources, parse_memory
from sage_ops.units import parse_moment

S = JobStatus


def test_lifecycle_table_matches_the_design() -> None:
    assert is_legal(None, S.SUBMITTED)  # accepted, not admitted yet (Ray not connected)
    assert is_legal(None, S.PENDING) and is_legal(None, S.REJECTED)  # decided in the submit's transaction
    assert not is_legal(None, S.RUNNING)
    assert is_legal(S.SUBMITTED, S.PENDING) and is_legal(S.SUBMITTED, S.REJECTED)
    assert is_legal(S.PENDING, S.RUNNING) and is_legal(S.PENDING, S.CANCELLED)
    for end in (S.COMPLETED, S.FAILED, S.CANCELLED):
        assert is_legal(S.RUNNING, end)
    assert not is_legal(S.PENDING, S.COMPLETED)
    assert not is_legal(S.SUBMITTED, S.RUNNING)
    for t in TERMINAL:
        assert is_terminal(t)
        assert not any(is_legal(t, other) for other in S)
    assert is_legal(S.FAILED, S.PENDING, retry=True)
    assert not is_legal(S.REJECTED, S.PENDING, retry=True)


def test_illegal_transition_is_a_conflict() -> None:
    with pytest.raises(Conflict):
        transition("j", S.COMPLETED, S.RUNNING)
    tr = transition("j", S.RUNNING, S.FAILED, "exit code 3", 1, exit_code=3)
    assert tr.fields == {"exit_code": 3} and tr.attempt == 1


@pytest.mark.parametrize("text,expected", [
    ("8GB", 8 * 10**9), ("512MiB", 512 * 2**20), ("1.5G", int(1.5 * 10**9)), ("100", 100 * 2**20), (2048, 2048),
    ("4 KiB", 4096),
])
def test_parse_memory(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["12XB", "-1GB", "GB", "", "1e9"])
def test_parse_memory_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_memory(bad)


def test_spec_shapes() -> None:
    with pytest.raises(ValueError):
        JobSpec(kind="command", command=[])
    with pytest.raises(ValueError):
        JobSpec(kind="script")
    with pytest.raises(ValueError):
        JobSpec.model_validate({"command": ["true"], "surprise": 1})
    spec = JobSpec(command=["true"], resources=Resources(cpu=2, memory="1GiB", custom_resources={"TPU": 1}))
    assert spec.resources.as_ray() == {"CPU": 2, "memory": float(2**30), "TPU": 1}


def test_addresses() -> None:
    a = parse_addresses("unix:///tmp/x.sock,tcp://10.0.0.1:19001, localhost:19002")
    assert [(x.kind, x.target) for x in a] == [("unix", "/tmp/x.sock"), ("tcp", "10.0.0.1:19001"),
                                                ("tcp", "localhost:19002")]
    with pytest.raises(Exception, match="bad address"):
        parse_addresses("nonsense")


def test_error_mapping_round_trips() -> None:
    assert isinstance(from_response(404, {"error": {"code": "not_found", "message": "no such job: x"}}), NotFound)
    assert isinstance(from_response(422, {"error": {"code": "rejected", "message": "m"}}), Rejected)
    assert from_response(500, "garbage").message == "HTTP 500"


def test_config_file_env_and_errors(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    f = tmp_path / "c.yaml"
    f.write_text("jobmanager: {max_jobs: 5}\nray: {address: 127.0.0.1:1234}\n")
    monkeypatch.setenv("SAGE_OPS_JOBMANAGER__JOB_TIMEOUT", "60")
    cfg = load_config(f)
    assert cfg.jobmanager.max_jobs == 5 and cfg.jobmanager.job_timeout == 60
    assert cfg.ray.address == "127.0.0.1:1234" and cfg.jobmanager.host is None
    f.write_text("jobmanager: {max_jobz: 5}\n")
    with pytest.raises(Invalid, match="max_jobz"):
        load_config(f)
    with pytest.raises(Invalid, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_a_database_from_before_migrations_is_upgraded_in_place(tmp_path) -> None:  # noqa: ANN001
    import sqlite3

    from sqlalchemy import inspect

    from sage_ops.server.storage.store import Store

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as c:  # the job table as issue 2 made it, with a job in it
        c.execute("CREATE TABLE job (id VARCHAR(32) PRIMARY KEY, seq INTEGER NOT NULL, name VARCHAR(128) NOT NULL,"
                  " tenant VARCHAR(64), status VARCHAR(16) NOT NULL, reason VARCHAR, priority INTEGER NOT NULL,"
                  " kind VARCHAR(16) NOT NULL, spec VARCHAR NOT NULL, exit_code INTEGER, result VARCHAR,"
                  " attempts_made INTEGER NOT NULL, node VARCHAR, created_at FLOAT NOT NULL,"
                  " updated_at FLOAT NOT NULL, started_at FLOAT, ended_at FLOAT)")
        c.execute("INSERT INTO job VALUES ('a1', 1, 'old', NULL, 'COMPLETED', NULL, 0, 'command', '{}', 0, NULL,"
                  " 1, NULL, 1.0, 1.0, 1.0, 2.0)")
    store = Store(f"sqlite:///{db}")
    try:
        insp = inspect(store.engine)
        assert {"not_before", "retry_base"} <= {c["name"] for c in insp.get_columns("job")}
        assert {"dependency", "idempotencykey", "alembic_version"} <= set(insp.get_table_names())
        with store.engine.connect() as c:
            assert c.exec_driver_sql("SELECT name FROM job").scalar() == "old"
    finally:
        store.close()
    Store(f"sqlite:///{db}").close()  # and again: nothing to do


def test_fair_share_gives_free_slots_to_the_least_served_tenant_by_weight() -> None:
    from types import SimpleNamespace

    from sage_ops.access import Quotas
    from sage_ops.server.scheduling.quotas import FairQueue, Tally, over_quota

    def job(tenant: str) -> SimpleNamespace:
        return SimpleNamespace(tenant=tenant, need={"CPU": 1.0})

    queue, running = FairQueue(), Tally()
    quotas = {"a": Quotas(weight=1), "b": Quotas(weight=3), "c": Quotas(weight=1, max_running=1)}
    for seq in range(100):
        for t in "abc":
            queue.push(t, 0, seq, f"{t}{seq}")
    import heapq

    for _ in range(9):  # nine free slots
        blocked: set[str | None] = set()
        while True:
            t = queue.order(running, quotas, blocked)
            assert t is not False
            if over_quota(t, quotas[t], running.use[t], 1.0, 0.0):
                blocked.add(t)
                continue
            break
        _, _, job_id = heapq.heappop(queue.heaps[t])
        running[job_id] = job(t)
    counts = {t: running.use[t].jobs for t in "abc"}
    assert counts == {"a": 2, "b": 6, "c": 1}  # b has 3x a's weight; c is held at max-running 1
    running.pop("b0")
    assert running.use["b"].jobs == 5 and running.use["b"].cpu == 5.0


def test_the_migrations_make_exactly_the_schema_of_the_models(tmp_path) -> None:  # noqa: ANN001
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from sage_ops.server.storage.store import Store

    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == []
    finally:
        store.close()


NOON_BEFORE = datetime(2026, 12, 5, 11, 0).astimezone()  # local time, as the CLI reads --begin


@pytest.mark.parametrize(("text", "expected"), [
    ("now", datetime(2026, 12, 5, 11, 0)), ("+90m", datetime(2026, 12, 5, 12, 30)),
    ("now+1h", datetime(2026, 12, 5, 12, 0)), ("14:30", datetime(2026, 12, 5, 14, 30)),
    ("10:00", datetime(2026, 12, 6, 10, 0)),  # passed today: its next occurrence
    ("tomorrow", datetime(2026, 12, 6, 0, 0)), ("tomorrow 02:00", datetime(2026, 12, 6, 2, 0)),
    ("midnight", datetime(2026, 12, 6, 0, 0)), ("noon", datetime(2026, 12, 5, 12, 0)),
    ("2026-12-24T18:00", datetime(2026, 12, 24, 18, 0)), ("2026-12-24", datetime(2026, 12, 24, 0, 0)),
])
def test_parse_moment(text: str, expected: datetime) -> None:
    assert parse_moment(text, NOON_BEFORE) == expected.astimezone().timestamp()


@pytest.mark.parametrize("bad", ["25:00", "soon", "+x", "tomorrow 7pm"])
def test_parse_moment_rejects_garbage_in_one_line(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^bad (time|duration) '.*'"):
        parse_moment(bad, NOON_BEFORE)

"""The group-committing writer, the job writes and the queries. The terminal-state guard lives
here; opening the database and its raw statements are in `database.py`.

Writes are queued and committed in groups by one writer thread: a submit is acknowledged only
after the commit that holds it, yet hundreds of concurrent submits share one fsync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import anyio
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError

from ...bodies import JobFilter
from ...errors import Conflict, DaemonUnavailable, NotFound
from ...lifecycle import JobStatus, Transition, transition
from ...name_filter import name_clause, prefix_range
from ...pipeline.shapes import OperatorMetrics, PipelinePlan, PipelineView
from ...schemas import JobKind, JobSpec
from ...views import AttemptView, JobEventView, JobView
from . import job_arrays
from .database import (
    ATTEMPT,
    DEP,
    EVENT,
    IDEM,
    JOB,
    META,
    PIPELINE,
    execute,
    fetchall,
    fetchone,
    id_chunks,
    in_marks,
    insert_many,
    lock_sqlite,
    make_engine,
    update,
    upgrade,
)
from .job_counts import add_counts
from .job_sort import page_query
from .sealing import redacted
from .tables import Job

#: the job row's optional columns and their defaults, from the table's model (tables.Job)
JOB_DEFAULTS = {name: f.default for name, f in Job.model_fields.items() if not f.is_required()}

log = logging.getLogger(__name__)
T = TypeVar("T")
IDEMPOTENCY_TTL = 86_400.0  # seconds a submit's Idempotency-Key is remembered


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


class Store:
    def __init__(self, url: str, synchronous: str = "FULL") -> None:
        self.url = url
        self._lock = lock_sqlite(url)
        self.engine = make_engine(url, synchronous)
        upgrade(self.engine)
        self.instance = self._instance()
        self._queue: list[tuple[Callable[[Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop, bool]] = []
        #: checked first in every transaction that holds a fenced write (see leadership.py)
        self.fence: Callable[[Connection], None] | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._writer, name="sage-ops-writer", daemon=True)
        self._thread.start()
        self.commits = 0
        self.committed: list[Callable[[], None]] = []  # told after each write commits (on the loop)

    def _instance(self) -> str:
        """This database's identity (made once): daemons sharing it share one Ray dispatcher."""
        with self.engine.begin() as conn:
            have = get_meta(conn, "instance")
            if have is None:
                have = secrets.token_hex(8)
                conn.execute(insert(META).prefix_with("OR IGNORE") if conn.dialect.name == "sqlite" else
                             pg_insert(META).on_conflict_do_nothing(), [{"key": "instance", "value": have}])
                have = get_meta(conn, "instance")
        return str(have)

    # -- writing -----------------------------------------------------------------------------
    async def write(self, fn: Callable[[Connection], T], fenced: bool = True) -> T:
        """Run `fn` in the next group transaction; return once it is committed. A fenced write
        (all but the lease's own) commits only while this daemon holds the leadership."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if self._closed:
                raise DaemonUnavailable("the daemon is shutting down")
            self._queue.append((fn, fut, loop, fenced))
            self._cond.notify()
        result = await fut
        for tell in self.committed:
            tell()
        return result

    def _writer(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                batch, self._queue = self._queue, []
            try:
                results = self._commit(batch)
            except Exception as exc:  # noqa: BLE001 - one refused operation (a batch that fails
                # its checks) or a database error must not sink its neighbours: redo each alone.
                if len(batch) == 1:
                    results = [exc]
                else:
                    if isinstance(exc, SQLAlchemyError):
                        log.warning("group commit failed (%s); retrying %d ops one by one", exc, len(batch))
                    results = []
                    for item in batch:
                        try:
                            results.extend(self._commit([item]))
                        except Exception as one:  # noqa: BLE001 - reported to that caller only
                            results.append(one)
            for (_fn, fut, loop, _fenced), res in zip(batch, results):
                loop.call_soon_threadsafe(_resolve, fut, res)
            # not kept while waiting for the next: a 50,000-job batch's closures hold ~50 MB
            del batch, results, _fn, fut, loop, res

    def _commit(self, batch: Sequence[tuple[Callable[[Connection], Any], Any, Any, bool]]) -> list[Any]:
        out: list[Any] = []
        with self.engine.begin() as conn:
            if self.fence is not None and any(item[3] for item in batch):
                self.fence(conn)
            for fn, _fut, _loop, _fenced in batch:
                out.append(_Ok(fn(conn)))
        self.commits += 1
        return out

    # -- reading -----------------------------------------------------------------------------
    async def read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.engine.connect() as conn:
                return fn(conn)

        try:
            return await anyio.to_thread.run_sync(run)
        except SQLAlchemyError as exc:
            raise DaemonUnavailable(f"database error: {exc.__class__.__name__}") from None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)
        self.engine.dispose()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def ping(self) -> float:
        t = time.perf_counter()
        with self.engine.connect() as conn:
            conn.execute(select(1)).scalar()
        return (time.perf_counter() - t) * 1000


class _Ok:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _resolve(fut: asyncio.Future[Any], res: Any) -> None:
    if fut.done():
        return
    if isinstance(res, _Ok):
        fut.set_result(res.value)
    elif isinstance(res, SQLAlchemyError):
        fut.set_exception(DaemonUnavailable(f"database error: {res.__class__.__name__}"))
    else:
        fut.set_exception(res)


# -- write operations (run inside the writer's transaction) ----------------------------------
def insert_jobs(conn: Connection, jobs: list[dict[str, Any]], events: list[dict[str, Any]],
                edges: list[dict[str, Any]] | None = None) -> None:
    insert_many(conn, JOB, jobs)
    insert_many(conn, EVENT, events)
    insert_many(conn, DEP, edges or [])
    add_counts(conn, Counter((j["tenant"] or "", j["status"]) for j in jobs))


def claim_key(conn: Connection, key: str, digest: str, job_ids: list[str], now: float) -> list[str] | None:
    """Record that `key` created `job_ids`; if the key was seen before, the ids it created then
    (a retried request), or Conflict if it came with different jobs."""
    rows = fetchall(conn, f"SELECT digest, job_ids, created_at FROM {IDEM.name} WHERE key = ?", [key])  # driver SQL
    row = rows[0] if rows else None
    if row is not None and row[2] > now - IDEMPOTENCY_TTL:
        if row[0] != digest:
            raise Conflict(f"Idempotency-Key {key!r} was used for a different request")
        return list(json.loads(row[1]))
    if row is not None:
        execute(conn, f"DELETE FROM {IDEM.name} WHERE key = ?", [key])
    if secrets.randbelow(100) == 0:  # now and then, forget expired keys
        execute(conn, f"DELETE FROM {IDEM.name} WHERE created_at < ?", [now - IDEMPOTENCY_TTL])
    insert_many(conn, IDEM, [{"key": key, "digest": digest, "job_ids": json.dumps(job_ids), "created_at": now}])
    return None


def _rows_by_id(conn: Connection, ids: Iterable[str], *cols: str) -> Iterable[tuple[Any, ...]]:
    """(id, *cols) of each existing job among `ids`, 512 ids per query at most, in driver SQL: it runs on
    every batch of job events, and building SQLAlchemy's statement was 39% of the daemon (py-spy)."""
    for chunk in id_chunks(ids):
        sql = f"SELECT id, {', '.join(cols)} FROM {JOB.name} WHERE id IN ({in_marks(chunk)})"
        yield from fetchall(conn, sql, chunk)


def statuses_of(conn: Connection, ids: Iterable[str],
                owners: dict[str, str | None] | None = None) -> dict[str, tuple[JobStatus, str]]:
    """(status, name) of each existing job among `ids`; with `owners`, their tenants too (same query)."""
    out: dict[str, tuple[JobStatus, str]] = {}
    for job_id, status, name, tenant in _rows_by_id(conn, ids, "status", "name", "tenant"):
        out[job_id] = (JobStatus(status), name)
        if owners is not None:
            owners[job_id] = tenant
    return out


def tenants_of(conn: Connection, ids: Iterable[str]) -> dict[str, str | None]:
    """The tenant of each existing job among `ids` (isolation checks)."""
    return dict(_rows_by_id(conn, ids, "tenant"))


def event_row(tr: Transition, now: float) -> dict[str, Any]:
    return {"job_id": tr.job_id, "time": now, "from_status": tr.old.value if tr.old else None,
            "to_status": tr.new.value, "reason": tr.reason or None, "attempt": tr.attempt}


def apply_transitions(conn: Connection, transitions: Iterable[Transition], now: float | None = None) -> list[bool]:
    """Compare-and-set each job's status; only the ones that moved leave an audit event.

    This is the terminal-state guard: a job that already left `old` (cancelled meanwhile,
    a replayed event) is not touched.
    """
    now = now or time.time()
    applied: list[bool] = []
    events = []
    moved: list[Transition] = []
    for tr in transitions:
        ok = False
        if tr.old is not None:
            values = {"status": tr.new.value, "reason": tr.reason or None, "updated_at": now, **tr.fields}
            ok = update(conn, JOB, values, {"id": tr.job_id, "status": tr.old.value}) > 0
        applied.append(ok)
        if ok:
            events.append(event_row(tr, now))
            if tr.old is not tr.new:
                moved.append(tr)
    insert_many(conn, EVENT, events)
    if moved:
        owner = tenants_of(conn, (tr.job_id for tr in moved))
        deltas: Counter[tuple[str, str]] = Counter()
        for tr in moved:
            assert tr.old is not None
            deltas[(owner.get(tr.job_id) or "", tr.old.value)] -= 1
            deltas[(owner.get(tr.job_id) or "", tr.new.value)] += 1
        add_counts(conn, deltas)
    return applied


def move_to(conn: Connection, job_id: str, new: JobStatus, reason: str, attempt: int, now: float,
            strict: bool = False, **fields: Any) -> bool:
    """Move a job from whatever it is now to `new`, if the lifecycle allows it (cancel, loss)."""
    old = current_status(conn, job_id)
    if old is None:
        raise NotFound(f"no such job: {job_id}")
    try:
        tr = transition(job_id, old, new, reason, attempt, **fields)
    except Conflict:
        if strict:
            raise Conflict(f"job {job_id} is already {old}") from None
        return False
    return apply_transitions(conn, [tr], now)[0]


def insert_attempt(conn: Connection, row: dict[str, Any]) -> None:
    insert_many(conn, ATTEMPT, [row])


def update_attempt(conn: Connection, job_id: str, number: int, values: dict[str, Any]) -> None:
    update(conn, ATTEMPT, values, {"job_id": job_id, "number": number})


def set_meta(conn: Connection, key: str, value: str) -> None:
    if update(conn, META, {"value": value}, {"key": key}) == 0:
        insert_many(conn, META, [{"key": key, "value": value}])


def get_meta(conn: Connection, key: str) -> str | None:
    return conn.execute(select(META.c.value).where(META.c.key == key)).scalar()


# -- queries ---------------------------------------------------------------------------------
def new_job_row(**values: Any) -> dict[str, Any]:
    """A job row to insert: the columns given, the others at the table's defaults."""
    return {**JOB_DEFAULTS, **values}


def _view_fields(m: Any) -> dict[str, Any]:
    """The JobView fields a job row holds as they are: the one place the row maps to the view."""
    return {"id": m["id"], "name": m["name"], "status": JobStatus(m["status"]), "reason": m["reason"],
            "priority": m["priority"], "tenant": m["tenant"], "kind": JobKind(m["kind"]), "exit_code": m["exit_code"],
            "attempts_made": m["attempts_made"], "node": m["node"], "held": bool(m["held"]),
            "created_at": utc(m["created_at"]), "array_index": m["array_index"],
            "array_id": m["array_id"] if m["array_index"] is not None else None,
            "started_at": utc(m["started_at"]), "ended_at": utc(m["ended_at"])}


def job_view(row: Any, attempts: list[Any] | None = None, with_spec: bool = True) -> JobView:
    m = row._mapping if hasattr(row, "_mapping") else row
    return JobView(
        **_view_fields(m),
        spec=redacted(JobSpec.model_validate_json(m["spec"])) if with_spec and m["spec"] else None,
        attempts=[
            AttemptView(number=a.number, status=JobStatus(a.status), node=a.node, pid=a.pid,
                        exit_code=a.exit_code, reason=a.reason, started_at=utc(a.started_at),
                        ended_at=utc(a.ended_at), cpu_seconds=a.cpu_seconds, max_rss_bytes=a.max_rss_bytes)
            for a in attempts or []
        ],
    )


def fresh_view(row: dict[str, Any], spec: JobSpec | None) -> JobView:
    """The view of a row just inserted, without re-validating what was just validated."""
    return JobView.model_construct(**_view_fields(row), spec=spec and redacted(spec), attempts=[])


def get_job_row(conn: Connection, job_id: str) -> Any:
    row = conn.execute(select(JOB).where(JOB.c.id == job_id)).first()
    if row is None:
        raise NotFound(f"no such job: {job_id}")
    return row


def get_job(conn: Connection, job_id: str) -> JobView:
    row = get_job_row(conn, job_id)
    attempts = conn.execute(select(ATTEMPT).where(ATTEMPT.c.job_id == job_id).order_by(ATTEMPT.c.number)).all()
    view = job_view(row, list(attempts))
    if view.spec is not None and view.spec.pipeline is not None:
        view.pipeline = pipeline_view(conn, job_id, view.spec.pipeline.plan)
    job_arrays.with_progress(conn, [view])
    return view


def put_pipeline_stats(conn: Connection, row: dict[str, Any]) -> None:
    if update(conn, PIPELINE, row, {"job_id": row["job_id"]}) == 0:
        insert_many(conn, PIPELINE, [row])


def pipeline_of(conn: Connection, job_id: str) -> PipelineView | None:
    """The pipeline view of a job, or None if it is not a pipeline job."""
    spec = conn.execute(select(JOB.c.spec).where(JOB.c.id == job_id, JOB.c.kind == JobKind.PIPELINE.value)).scalar()
    if spec is None:
        return None
    # only the plan: the TUI asks every 2 s, and the spec also holds the code (up to 8 MiB)
    return pipeline_view(conn, job_id, PipelinePlan.model_validate(json.loads(spec)["pipeline"]["plan"]))


def pipeline_view(conn: Connection, job_id: str, plan: PipelinePlan) -> PipelineView:
    """A pipeline's plan with the latest metrics its driver reported (none before it runs)."""
    row = conn.execute(select(PIPELINE).where(PIPELINE.c.job_id == job_id)).first()
    if row is None:
        return PipelineView(plan=plan)
    return PipelineView(plan=plan, metrics=[OperatorMetrics.model_validate(m) for m in json.loads(row.data)],
                        attempt=row.attempt, updated_at=utc(row.updated_at))


def current_status(conn: Connection, job_id: str) -> JobStatus | None:
    row = fetchone(conn, f"SELECT status FROM {JOB.name} WHERE id = ?", [job_id])
    return None if row is None else JobStatus(row[0])


def get_result(conn: Connection, job_id: str) -> tuple[JobStatus, str | None]:
    """Its status and its row's result as stored (JSON text, results.STORED, or None)."""
    row = get_job_row(conn, job_id)
    return JobStatus(row.status), row.result


def _filtered(q: Any, f: JobFilter | None) -> Any:
    if f is None:
        return q
    if f.array:  # an array's tasks; else arrays are one job each, their tasks left out
        q = q.where(JOB.c.array_id == f.array, JOB.c.array_index.is_not(None))
    else:
        q = q.where(JOB.c.array_index.is_(None))
    if f.arrays:
        q = q.where(JOB.c.array_id.is_not(None))
    if f.status:
        q = q.where(JOB.c.status.in_([s.value for s in f.status]))
    if f.name:
        q = q.where(name_clause(JOB.c.name, f.name))
    if f.tenant:
        q = q.where(JOB.c.tenant == f.tenant)
    if f.since:
        q = q.where(JOB.c.created_at >= f.since.timestamp())
    if f.until:
        q = q.where(JOB.c.created_at < f.until.timestamp())
    return q


def list_jobs(conn: Connection, f: JobFilter | None = None, limit: int = 100, cursor: str | None = None,
              with_spec: bool = True, *, sort: str | None = None, desc: bool = False
              ) -> tuple[list[JobView], str | None]:
    """One page, newest first or by a `sort` column (job_sort); the cursor is where the next starts."""
    q = _filtered(select(JOB), f)
    if f is not None and f.name and (bounds := prefix_range(f.name)) and _few_named(conn, *bounds):
        q = q.where(JOB.c.name >= bounds[0], JOB.c.name < bounds[1])
    q, cursor_of = page_query(q, cursor, sort, desc)
    rows = conn.execute(q.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    tried = attempts_of(conn, [r.id for r in rows])
    views = [job_view(r, tried.get(r.id), with_spec=with_spec) for r in rows]
    job_arrays.with_progress(conn, views)
    return views, cursor_of(rows[-1]) if more and rows else None


def attempts_of(conn: Connection, ids: Sequence[str]) -> dict[str, list[Any]]:
    """The attempts of each of `ids`, in order: one query per 500 jobs of a page, never one per job."""
    out: dict[str, list[Any]] = {}
    for chunk in id_chunks(ids):
        q = select(ATTEMPT).where(ATTEMPT.c.job_id.in_(chunk)).order_by(ATTEMPT.c.job_id, ATTEMPT.c.number)
        for a in conn.execute(q):
            out.setdefault(a.job_id, []).append(a)
    return out


FEW_NAMED = 2000  # up to this many jobs under a name prefix, the name index finds a page faster


def _few_named(conn: Connection, low: str, high: str) -> bool:
    """Whether few jobs have a name in [low, high): then the name index and a sort find a page at
    once even when the newest match is old, where walking jobs newest-first would read them all.
    With many, walking newest-first finds a page soon. (A probe of at most FEW_NAMED index rows.)"""
    inner = select(JOB.c.name).where(JOB.c.name >= low, JOB.c.name < high).limit(FEW_NAMED).subquery()
    return int(conn.execute(select(func.count()).select_from(inner)).scalar() or 0) < FEW_NAMED


def matching_ids(conn: Connection, f: JobFilter, statuses: Iterable[JobStatus]) -> list[str]:
    """Ids of the jobs that match `f` and are in one of `statuses` (bulk cancel / retry)."""
    allowed = {s.value for s in statuses}
    if f.status:
        allowed &= {s.value for s in f.status}
    q = _filtered(select(JOB.c.id), f.model_copy(update={"status": []})).where(JOB.c.status.in_(sorted(allowed)))
    return list(conn.execute(q.order_by(JOB.c.seq)).scalars())


def job_events(conn: Connection, job_id: str) -> list[JobEventView]:
    get_job_row(conn, job_id)
    rows = conn.execute(select(EVENT).where(EVENT.c.job_id == job_id).order_by(EVENT.c.id)).all()
    return [JobEventView(time=utc(r.time), from_status=r.from_status, to_status=r.to_status,
                         reason=r.reason, attempt=r.attempt) for r in rows]


def active_jobs(conn: Connection, statuses: list[str]) -> list[Any]:
    return list(conn.execute(select(JOB).where(JOB.c.status.in_(statuses)).order_by(JOB.c.seq)).all())


def max_seq(conn: Connection) -> int:
    return conn.execute(select(func.max(JOB.c.seq))).scalar() or 0

"""Retention in the store: which finished jobs have ended long enough ago to go, taken a batch at a
time along the (status, ended_at) index, and their deletion with every row that hangs off them.

A job stays, however old, while an unfinished job waits for it (the waiter would find its
dependency gone), and an array's tasks go only with their array, in the same transaction: the
batch walks the jobs of listings (tasks are left out) and brings each array's tasks along. A job
left is passed over by the cursor, so a sweep reads each old row once. The edges of jobs that
wait for a deleted one stay: a later retry of such a waiter says its dependency is gone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, not_, select

from ...lifecycle import TERMINAL, is_terminal
from ...units import moment_text
from . import job_arrays, job_graph
from . import store as st
from .accounts import add_audit
from .database import ATTEMPT, DEP, EVENT, IDEM, JOB, PIPELINE, execute, fetchall, id_chunks, in_marks
from .job_counts import add_counts
from .results import STORED
from .store import IDEMPOTENCY_TTL

STATUSES = sorted(s.value for s in TERMINAL)  # the order a sweep walks them in
SCAN_LIMIT = 10  # jobs a step reads at most, in batches: a step over jobs that stay ends all the same
AUDIT_ACTION = "retention"

#: where a sweep is in each terminal status: (ended_at, id) of the last job it passed; a status
#: absent from it was not started, one mapped to None is done
Cursor = dict[str, "tuple[float, str] | None"]


@dataclass
class Batch:
    """What one step of a sweep takes: the jobs to delete (with their arrays' tasks)."""

    ids: list[str] = field(default_factory=list)  # every row to delete, tasks included
    jobs: int = 0  # jobs as listings count them: an array is one
    kept: int = 0  # old enough, but an unfinished job waits for them
    oldest: float | None = None  # ended_at of the jobs taken
    newest: float | None = None
    cursor: Cursor = field(default_factory=dict)  # where the next step starts
    stored: list[str] = field(default_factory=list)  # deleted jobs whose results are in the shared store
    done: bool = False  # every status walked up to the cutoff

    def take(self, ended_at: float, group: Sequence[str]) -> None:
        self.ids.extend(group)
        self.jobs += 1
        self.oldest = ended_at if self.oldest is None else min(self.oldest, ended_at)
        self.newest = ended_at if self.newest is None else max(self.newest, ended_at)


def _page(conn: Connection, status: str, cutoff: float, after: tuple[float, str] | None, n: int) -> list[Any]:
    """The next `n` jobs of a status that ended before `cutoff`, oldest first (tasks left out)."""
    q = select(JOB.c.id, JOB.c.ended_at, JOB.c.array_id).where(
        JOB.c.status == status, JOB.c.ended_at < cutoff, JOB.c.array_index.is_(None))
    if after is not None:  # one range of the index, ties past `after` by id: an OR of two ranges made
        # SQLite read the whole rest of the range and sort it, for every page
        q = q.where(JOB.c.ended_at >= after[0], not_(and_(JOB.c.ended_at == after[0], JOB.c.id <= after[1])))
    return list(conn.execute(q.order_by(JOB.c.ended_at, JOB.c.id).limit(n)))


def _groups(conn: Connection, rows: Sequence[Any]) -> list[list[str] | None]:
    """Per row, the ids that go with it (itself, and an array's tasks), or None if it must stay:
    an unfinished job waits for it or for one of its tasks, or a task has not finished."""
    arrays = [r.id for r in rows if r.array_id == r.id]
    tasks = job_arrays.array_tasks(conn, arrays) if arrays else {}
    groups = {r.id: [r.id, *(t for t, _ in tasks.get(r.id, []))] for r in rows}
    waiters = job_graph.dependents_of(conn, [i for g in groups.values() for i in g])
    live = {w for w, (status, _) in st.statuses_of(conn, {w for ws in waiters.values() for w in ws}).items()
            if not is_terminal(status)}
    out: list[list[str] | None] = []
    for r in rows:
        unfinished = any(not is_terminal(s) for _, s in tasks.get(r.id, []))
        waited = any(w in live for i in groups[r.id] for w in waiters.get(i, []))
        out.append(None if unfinished or waited else groups[r.id])
    return out


def take(conn: Connection, cutoff: float, cursor: Cursor, limit: int) -> Batch:
    """The next batch from `cursor`: up to `limit` rows (an array larger than that goes alone).
    Reads only; the same walk serves a dry run and, in the writer's transaction, `expire`."""
    out, scanned = Batch(cursor=dict(cursor)), 0
    for status in STATUSES:
        while status not in out.cursor or out.cursor[status] is not None:
            if scanned >= SCAN_LIMIT * limit:  # mostly kept jobs: the step ends, the sweep goes on
                return out
            rows = _page(conn, status, cutoff, out.cursor.get(status), max(1, limit - len(out.ids)))
            scanned += len(rows)
            if not rows:
                out.cursor[status] = None
                break
            for row, group in zip(rows, _groups(conn, rows)):
                if group is not None and out.ids and len(out.ids) + len(group) > limit:
                    return out
                out.cursor[status] = (row.ended_at, row.id)
                if group is None:
                    out.kept += 1
                else:
                    out.take(row.ended_at, group)
            if len(out.ids) >= limit:
                return out
    out.done = True
    return out


def delete_jobs(conn: Connection, ids: Sequence[str]) -> list[str]:
    """Delete these jobs and what hangs off them (attempts, events, their own edges, pipeline
    figures), keeping the per-(tenant, status) counts in step. Returns those whose results are
    in the shared store (results.py), to be removed there after the commit; the rest were in the rows."""
    gone: Counter[tuple[str, str]] = Counter()
    stored: list[str] = []
    for chunk in id_chunks(ids):
        marks = in_marks(chunk)
        stored += [r[0] for r in fetchall(conn, f"SELECT id FROM {JOB.name} WHERE id IN ({marks}) AND result = ?",
                                          [*chunk, STORED])]
        for tenant, status, n in fetchall(conn, f"SELECT COALESCE(tenant, ''), status, COUNT(*) FROM {JOB.name} "
                                                f"WHERE id IN ({marks}) GROUP BY COALESCE(tenant, ''), status", chunk):
            gone[(tenant, status)] -= int(n)
        for table in (ATTEMPT, EVENT, DEP, PIPELINE):
            execute(conn, f"DELETE FROM {table.name} WHERE job_id IN ({marks})", chunk)
        execute(conn, f"DELETE FROM {JOB.name} WHERE id IN ({marks})", chunk)
    add_counts(conn, gone)
    return stored


def expire(conn: Connection, cutoff: float, cursor: Cursor, limit: int, actor: str, now: float) -> Batch:
    """One step of a sweep, in the writer's (fenced) transaction: take a batch and delete it, with
    the submit keys made before the cutoff (the only ones that can name a deleted job: a job is
    made when its key is, and it ended before the cutoff) that are past their validity too, and
    one audit row for the batch."""
    batch = take(conn, cutoff, cursor, limit)
    if batch.ids:
        batch.stored = delete_jobs(conn, batch.ids)
        # a key still valid (IDEMPOTENCY_TTL) stays even if its job goes: a replay must not make it twice
        execute(conn, f"DELETE FROM {IDEM.name} WHERE created_at < ?", [min(cutoff, now - IDEMPOTENCY_TTL)])
        tasks = len(batch.ids) - batch.jobs
        what = f"{batch.jobs} finished jobs" + (f" and {tasks} array tasks" if tasks else "")
        span = f"{moment_text(batch.oldest or cutoff)} to {moment_text(batch.newest or cutoff)}"
        add_audit(conn, [{"time": now, "actor": actor[:100], "tenant": None, "action": AUDIT_ACTION,
                          "target": f"{batch.jobs} jobs", "status": 200,
                          "detail": f"deleted {what} that ended before {moment_text(cutoff)} (from {span})"}])
    return batch

"""Job arrays in the store: an array's task rows (made as their turn comes), its progress for a
listing, the arrays among some ids. Plain queries on the job table, as job_graph.py is for edges."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, func, select

from ...arrays import Indices
from ...views import ArrayProgress, JobView
from .database import JOB, id_chunks


def arrays_among(conn: Connection, ids: Iterable[str]) -> dict[str, str | None]:
    """The arrays among `ids`, with their tenants."""
    out: dict[str, str | None] = {}
    for chunk in id_chunks(ids):
        for job_id, tenant in conn.execute(select(JOB.c.id, JOB.c.tenant).where(JOB.c.id.in_(chunk),
                                                                                 JOB.c.array_id == JOB.c.id)):
            out[job_id] = tenant
    return out


def spec_of(conn: Connection, job_id: str) -> str | None:
    """A job's stored spec (JSON), None if there is no such job."""
    return conn.execute(select(JOB.c.spec).where(JOB.c.id == job_id)).scalar()


def array_tasks(conn: Connection, ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Each array's made tasks: (id, status), in index order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for chunk in id_chunks(ids):  # an array's tasks all come with its own chunk, in order
        q = (select(JOB.c.array_id, JOB.c.id, JOB.c.status).where(JOB.c.array_id.in_(chunk),
                                                                  JOB.c.array_index.is_not(None)).order_by(JOB.c.seq))
        for array_id, job_id, status in conn.execute(q):
            out.setdefault(array_id, []).append((job_id, status))
    return out


def with_progress(conn: Connection, views: Sequence[JobView]) -> None:
    """Fill in each array view's progress: its made tasks by status (one grouped query for the
    page), the rest waiting to be made."""
    arrays = {v.id: v for v in views if v.spec is not None and v.spec.array is not None}
    if not arrays:
        return
    counts: dict[str, dict[str, int]] = {}
    for chunk in id_chunks(arrays):
        q = (select(JOB.c.array_id, JOB.c.status, func.count()).where(JOB.c.array_id.in_(chunk),
                                                                      JOB.c.array_index.is_not(None))
             .group_by(JOB.c.array_id, JOB.c.status))
        for array_id, status, n in conn.execute(q):
            counts.setdefault(array_id, {})[status] = int(n)
    for array_id, v in arrays.items():
        assert v.spec is not None and v.spec.array is not None
        c = counts.get(array_id, {})
        total = len(Indices.parse(v.spec.array.indices))
        progress = ArrayProgress(size=total, throttle=v.spec.array.throttle, running=c.get("RUNNING", 0),
                                 completed=c.get("COMPLETED", 0), failed=c.get("FAILED", 0) + c.get("REJECTED", 0),
                                 cancelled=c.get("CANCELLED", 0))
        progress.waiting = total - progress.running - progress.ended
        v.array = progress

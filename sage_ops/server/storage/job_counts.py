"""How many jobs there are per (tenant, status): kept in `jobcount` by the transactions that
insert and move jobs, so `stats`, /metrics and the TUI header read a few rows, never count
millions."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Connection, func, select

from .database import COUNT, JOB, execute, insert_many


def add_counts(conn: Connection, deltas: Counter[tuple[str, str]]) -> None:
    """Keep `jobcount` in step with the jobs, in the transaction that changes them."""
    for (tenant, status), n in deltas.items():
        if n and execute(conn, f"UPDATE {COUNT.name} SET n = n + ? WHERE tenant = ? AND status = ?",
                         [n, tenant, status]) == 0:
            insert_many(conn, COUNT, [{"tenant": tenant, "status": status, "n": n}])


def recount(conn: Connection) -> None:
    """Count every job anew (after rows were written behind the daemon's back, e.g. a bulk load)."""
    execute(conn, f"DELETE FROM {COUNT.name}", [])
    execute(conn, f"INSERT INTO {COUNT.name} (tenant, status, n) SELECT COALESCE(tenant, ''), status, COUNT(*) "
                  f"FROM {JOB.name} GROUP BY COALESCE(tenant, ''), status", [])


def counts_by_status(conn: Connection, tenant: str | None = None, scoped: bool = False) -> dict[str, int]:
    """Jobs by status (of one tenant if `scoped`), from the kept counts: a few rows, not every job."""
    q = select(COUNT.c.status, func.sum(COUNT.c.n))
    if scoped:
        q = q.where(COUNT.c.tenant == (tenant or ""))
    rows = conn.execute(q.group_by(COUNT.c.status)).all()
    return {status: int(n) for status, n in rows if n}


def failed_since(conn: Connection, since: float, tenant: str | None = None, scoped: bool = False) -> int:
    """Jobs that failed at or after `since`: a range of the (status, ended_at) index."""
    q = select(func.count()).select_from(JOB).where(JOB.c.status == "FAILED", JOB.c.ended_at >= since)
    if scoped:
        q = q.where(JOB.c.tenant == tenant)
    return int(conn.execute(q).scalar() or 0)

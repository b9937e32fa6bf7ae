"""The dependency edges in the store: who waits for whom, read either way, walked down the graph
(cycle checks, cascades to revive) or across it (the execution graph's jobs), and replaced when
a waiting job is updated."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from ...lifecycle import JobStatus
from . import store as st
from .database import DEP, JOB, id_chunks, insert_many


def _edges(conn: Connection, ids: Iterable[str], reverse: bool) -> dict[str, list[str]]:
    key, other = (DEP.c.depends_on, DEP.c.job_id) if reverse else (DEP.c.job_id, DEP.c.depends_on)
    out: dict[str, list[str]] = {}
    for chunk in id_chunks(ids):
        for k, v in conn.execute(select(key, other).where(key.in_(chunk))):
            out.setdefault(k, []).append(v)
    return out


def dependencies_of(conn: Connection, ids: Iterable[str]) -> dict[str, list[str]]:
    """job -> the jobs it waits for."""
    return _edges(conn, ids, reverse=False)


def dependents_of(conn: Connection, ids: Iterable[str]) -> dict[str, list[str]]:
    """job -> the jobs that wait for it."""
    return _edges(conn, ids, reverse=True)


def descendants(conn: Connection, roots: Sequence[str],
                keep: Callable[[Connection, list[str]], list[str]] | None = None) -> list[str]:
    """The jobs that wait for `roots`, directly or not, nearest first; with `keep`, the walk goes
    on only through the jobs `keep` returns of each level."""
    seen, order, level = set(roots), [], list(roots)
    while level:
        kids = list(dict.fromkeys(k for ks in dependents_of(conn, level).values() for k in ks if k not in seen))
        seen.update(kids)
        level = keep(conn, kids) if keep is not None else kids
        order += level
    return order


def cancelled_by_dependency(conn: Connection, ids: list[str]) -> list[str]:
    """Those of `ids` cancelled because a dependency ended as they could not accept (the reason
    outcomes.dependency_unmet gives them): what retry --with-dependents revives."""
    hit: set[str] = set()
    for chunk in id_chunks(ids):
        hit.update(conn.execute(select(JOB.c.id).where(JOB.c.id.in_(chunk),
                                                       JOB.c.status == JobStatus.CANCELLED.value,
                                                       JOB.c.reason.like("dependency %"))).scalars())
    return [i for i in ids if i in hit]


def set_dependencies(conn: Connection, job_id: str, deps: Sequence[str]) -> None:
    """`job_id` waits for exactly `deps` from now on (update of a waiting job)."""
    conn.execute(DEP.delete().where(DEP.c.job_id == job_id))
    insert_many(conn, DEP, [{"job_id": job_id, "depends_on": d} for d in deps])


def graph_rows(conn: Connection, start: str, cap: int = 100_000) -> tuple[list[Any], list[tuple[str, str]]]:
    """The jobs connected to `start` by dependencies (either way) and their edges."""
    st.get_job_row(conn, start)  # NotFound for an unknown job
    seen = {start}
    edges: set[tuple[str, str]] = set()
    frontier = [start]
    while frontier and len(seen) < cap:
        nxt: list[str] = []
        for reverse in (False, True):
            for here, others in _edges(conn, frontier, reverse).items():
                for other in others:
                    edges.add((other, here) if reverse else (here, other))  # (job, its dependency)
                    if other not in seen:
                        seen.add(other)
                        nxt.append(other)
        frontier = nxt
    ids = list(seen)
    rows = []
    cols = [JOB.c.id, JOB.c.name, JOB.c.status, JOB.c.priority, JOB.c.started_at, JOB.c.ended_at]
    for chunk in id_chunks(ids):
        rows.extend(conn.execute(select(*cols).where(JOB.c.id.in_(chunk))).all())
    return rows, sorted(edges)

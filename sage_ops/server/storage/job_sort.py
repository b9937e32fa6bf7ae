"""The order of a job listing: newest first (the cursor is a submission seq), or by one of a few
columns over ALL matching jobs, so a client that shows a page (the TUI) sorts the whole list, not
only the rows it holds.

A sorted listing is keyset-paged like the default one: the id breaks ties (every order is total,
so a page never repeats or skips a job), and the cursor is the last row's (value, id) as JSON.
Missing values (no node, no exit code yet) sort as the lowest: first ascending, last descending."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, func, or_

from ...errors import BadRequest
from .database import JOB

LOWEST_INT = -(2**31)
#: sort key -> (column, what a missing value sorts as; None: the column is never missing)
SORTS: dict[str, tuple[Any, Any]] = {
    "id": (JOB.c.id, None), "name": (JOB.c.name, None), "status": (JOB.c.status, None),
    "priority": (JOB.c.priority, None), "tenant": (JOB.c.tenant, ""), "node": (JOB.c.node, ""),
    "attempts": (JOB.c.attempts_made, None), "exit_code": (JOB.c.exit_code, LOWEST_INT), "reason": (JOB.c.reason, ""),
    "created": (JOB.c.created_at, None), "started": (JOB.c.started_at, 0.0), "ended": (JOB.c.ended_at, 0.0),
}
TEXT = {"id", "name", "status", "tenant", "node", "reason"}


def check_sort(sort: str | None) -> None:
    """A one-line error naming the keys, for a sort key that is not one of them."""
    if sort is not None and sort not in SORTS:
        raise BadRequest(f"cannot sort by {sort!r}: use one of {', '.join(SORTS)}")


def page_query(q: Any, cursor: str | None, sort: str | None = None, desc: bool = False
               ) -> tuple[Any, Callable[[Any], str]]:
    """`q` ordered and started after `cursor`, and how to make the cursor of a page's last row."""
    if sort is None:
        if cursor:
            try:
                q = q.where(JOB.c.seq < int(cursor))
            except ValueError:
                raise BadRequest(f"bad cursor {cursor!r}") from None
        return q.order_by(JOB.c.seq.desc()), lambda row: str(row.seq)
    check_sort(sort)
    column, missing = SORTS[sort]
    key = column if missing is None else func.coalesce(column, missing)
    if cursor:
        value, last = _decode(cursor, sort)
        if desc:
            q = q.where(or_(key < value, and_(key == value, JOB.c.id < last)))
        else:
            q = q.where(or_(key > value, and_(key == value, JOB.c.id > last)))
    order = [key.desc(), JOB.c.id.desc()] if desc else [key, JOB.c.id]

    def cursor_of(row: Any) -> str:
        value = getattr(row, column.name)
        return json.dumps([missing if value is None else value, row.id])

    return q.order_by(*order), cursor_of


def _decode(cursor: str, sort: str) -> tuple[Any, str]:
    """The (value, id) a sorted page's cursor holds, of the type the sort column has."""
    try:
        value, last = json.loads(cursor)
    except (ValueError, TypeError):
        raise BadRequest(f"bad cursor {cursor!r} for a listing sorted by {sort}") from None
    kind = str if sort in TEXT else (int, float)
    if not isinstance(last, str) or isinstance(value, bool) or not isinstance(value, kind):
        raise BadRequest(f"bad cursor {cursor!r} for a listing sorted by {sort}")
    return value, last

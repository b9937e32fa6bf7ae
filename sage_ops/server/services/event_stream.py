"""The daemon's event stream: every job's changes of state in commit order, for live views (the
TUI, scripts). One tailer reads the audit table (JobEvent) for all followers — so a standby
serves the stream too, and a restart loses nothing: a follower resumes `after` the last seq it
saw. A follower that falls too far behind is told so (a `resync` line), never dropped silently."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, func, select

from ...views import JobChange
from ..storage.database import fetchall
from ..storage.store import Store
from ..storage.tables import Job, JobEvent

E, J = JobEvent.__table__, Job.__table__
PAGE = 500  # events read, encoded and sent at once: ~100 KB, so a burst's buffers stay below the daemon's
# mmap threshold (allocator.MMAP_THRESHOLD) and are reused from its heap instead of mapped afresh
QUEUE = 20_000  # events a follower may lag behind before it is told to resync
HEARTBEAT = 15.0
GAP = 0.02  # seconds at least between two reads of the table: a read per burst of commits, not per commit
Visible = Callable[[JobChange], bool] | None  # which events a follower may see; None: all


PAGE_SQL = (f"SELECT e.id, e.job_id, e.time, e.from_status, e.to_status, e.reason, e.attempt, j.name, j.tenant, "
            f"j.priority, j.node, j.exit_code FROM {E.name} e JOIN {J.name} j ON j.id = e.job_id "
            "WHERE e.id > ? ORDER BY e.id LIMIT ?")


def _page(conn: Connection, after: int) -> list[JobChange]:
    """In driver SQL, rows as plain tuples: SQLAlchemy's rows, read by name, were half the cost
    of a 10,000-job burst's pages (the worst lag of the stream)."""
    return [JobChange(seq=seq, job_id=job_id, name=name, tenant=tenant, time=datetime.fromtimestamp(t, timezone.utc),
                      from_status=old, to_status=new, reason=reason, attempt=attempt, priority=priority, node=node,
                      exit_code=exit_code)
            for seq, job_id, t, old, new, reason, attempt, name, tenant, priority, node, exit_code
            in fetchall(conn, PAGE_SQL, [after, PAGE])]


class _Page:
    """A page of events as the hub read it: each row with its encoded line, and all the lines
    joined once, so a follower that sees every event sends the page as it is."""

    __slots__ = ("data", "first", "last", "rows")

    def __init__(self, rows: list[JobChange]) -> None:
        self.rows = [(row, encode(row)) for row in rows]
        self.data = b"".join(line for _, line in self.rows)
        self.first, self.last = rows[0].seq, rows[-1].seq

    def __len__(self) -> int:
        return len(self.rows)

    def after(self, cursor: int, visible: Visible) -> bytes:
        """The lines of this page past `cursor` that `visible` lets through."""
        if visible is None and self.first > cursor:
            return self.data
        return b"".join(line for row, line in self.rows if row.seq > cursor and (visible is None or visible(row)))


class _Follower:
    """One follower's backlog: pages shared with every other follower. Bounded: past QUEUE
    events it is marked lost and told to resync."""

    __slots__ = ("lost", "pages", "pending", "ready")

    def __init__(self) -> None:
        self.pages: deque[_Page] = deque()
        self.pending = 0
        self.lost = False
        self.ready = asyncio.Event()

    def put(self, page: _Page) -> None:
        if not self.lost:
            if self.pending + len(page) > QUEUE:
                self.lost = True
                self.pages.clear()
                self.pending = 0
            else:
                self.pages.append(page)
                self.pending += len(page)
        self.ready.set()


class EventHub:
    def __init__(self, store: Store, interval: float = 0.1) -> None:
        self.store = store
        self.interval = interval
        self.last = -1  # the newest seq fanned out (-1: not read yet)
        self.followers: set[_Follower] = set()
        self.wake = asyncio.Event()
        self.fresh = asyncio.Event()  # this daemon committed: read now, not at the next poll
        store.committed.append(self.fresh.set)

    async def newest(self) -> int:
        """The newest committed event's seq, from the table (the hub's own may lag a poll)."""
        return int(await self.store.read(lambda c: c.execute(select(func.max(E.c.id))).scalar() or 0))

    async def tail(self) -> int:
        if self.last < 0:
            self.last = await self.newest()
        return self.last

    async def run(self) -> None:
        """Read new events while someone follows, and hand each follower the page: each event is
        encoded once here, not once per follower, and a follower takes a page per wake-up."""
        while True:
            if not self.followers:
                self.last = -1  # nobody read on meanwhile: the next follower's "now" is read afresh
                self.wake.clear()
                await self.wake.wait()
            after = await self.tail()
            self.fresh.clear()
            rows = await self.store.read(lambda c, a=after: _page(c, a))
            if rows:
                self.last = rows[-1].seq
                page = _Page(rows)
                for follower in list(self.followers):
                    follower.put(page)
            if len(rows) < PAGE:  # the next read: when this daemon commits, or polled (what a standby sees)
                await asyncio.sleep(GAP)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.fresh.wait(), max(0.0, self.interval - GAP))

    async def follow(self, after: int | None, visible: Visible, follow: bool = True) -> AsyncIterator[bytes]:
        """NDJSON lines of the events after `after` (None: from now on), then of live ones if
        `follow`; a page per chunk (a burst costs a send per page, not per event), sent as the
        hub encoded it, not joined with the next into a bigger copy per follower."""
        me = _Follower()
        if follow:
            self.followers.add(me)
            self.wake.set()
        try:
            cursor = await self.newest() if after is None else after  # rows up to it are skipped below
            while True:  # catch up from the table
                rows = await self.store.read(lambda c, a=cursor: _page(c, a))
                if data := b"".join(encode(row) for row in rows if visible is None or visible(row)):
                    yield data
                if rows:
                    cursor = rows[-1].seq
                if len(rows) < PAGE:
                    break
            if not follow:
                return
            # "live from here": a reader that loads a view now and applies what follows misses nothing
            yield encode(JobChange(seq=cursor, kind="heartbeat", time=datetime.now(timezone.utc)))
            while True:
                if not me.pages and not me.lost:
                    me.ready.clear()
                    try:
                        await asyncio.wait_for(me.ready.wait(), timeout=HEARTBEAT)
                    except asyncio.TimeoutError:
                        yield encode(JobChange(seq=cursor, kind="heartbeat", time=datetime.now(timezone.utc)))
                        continue
                if me.lost:  # this follower lost events: say so, and go on from the newest
                    me.lost = False
                    cursor = self.last
                    yield encode(JobChange(seq=cursor, kind="resync", time=datetime.now(timezone.utc)))
                    continue
                while me.pages:
                    page = me.pages.popleft()
                    me.pending -= len(page)
                    if page.last > cursor:  # else: already sent while catching up
                        data = page.after(cursor, visible)
                        cursor = page.last
                        if data:
                            yield data
        finally:
            self.followers.discard(me)


def visible_to(tenant: str | None, admin: bool) -> Visible:
    """None for an admin, who sees every event (and so takes whole pages as they are)."""
    if admin:
        return None
    return lambda row: row.tenant == tenant


def encode(row: Any) -> bytes:
    return row.model_dump_json(exclude_none=True).encode() + b"\n"

"""The daemon's event stream: every job's changes of state in commit order, for live views (the
TUI, scripts). One tailer reads the audit table (JobEvent) for all followers — so a standby
serves the stream too, and a restart loses nothing: a follower resumes `after` the last seq it
saw. A follower that falls too far behind is told so (a `resync` line), never dropped silently."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, func, select

from ..schemas import JobChange
from .store import Store
from .tables import Job, JobEvent

E, J = JobEvent.__table__, Job.__table__
PAGE = 5000
QUEUE = 20_000  # events a follower may lag behind before it is told to resync
HEARTBEAT = 15.0


def _page(conn: Connection, after: int, limit: int = PAGE) -> list[JobChange]:
    q = (select(E.c.id, E.c.job_id, E.c.time, E.c.from_status, E.c.to_status, E.c.reason, E.c.attempt, J.c.name,
                J.c.tenant, J.c.priority, J.c.node, J.c.exit_code)
         .select_from(E.join(J, J.c.id == E.c.job_id)).where(E.c.id > after).order_by(E.c.id).limit(limit))
    return [JobChange(seq=r.id, job_id=r.job_id, name=r.name, tenant=r.tenant,
                      time=datetime.fromtimestamp(r.time, timezone.utc), from_status=r.from_status,
                      to_status=r.to_status, reason=r.reason, attempt=r.attempt, priority=r.priority, node=r.node,
                      exit_code=r.exit_code) for r in conn.execute(q)]


class EventHub:
    def __init__(self, store: Store, interval: float = 0.1) -> None:
        self.store = store
        self.interval = interval
        self.last = -1  # the newest seq fanned out (-1: not read yet)
        self.followers: set[asyncio.Queue[JobChange | None]] = set()
        self.wake = asyncio.Event()

    async def newest(self) -> int:
        """The newest committed event's seq, from the table (the hub's own may lag a poll)."""
        return int(await self.store.read(lambda c: c.execute(select(func.max(E.c.id))).scalar() or 0))

    async def tail(self) -> int:
        if self.last < 0:
            self.last = await self.newest()
        return self.last

    async def run(self) -> None:
        """Read new events while someone follows, and hand each follower its copy."""
        while True:
            if not self.followers:
                self.last = -1  # nobody read on meanwhile: the next follower's "now" is read afresh
                self.wake.clear()
                await self.wake.wait()
            after = await self.tail()
            rows = await self.store.read(lambda c, a=after: _page(c, a))
            if rows:
                self.last = rows[-1].seq
                for queue in list(self.followers):
                    for row in rows:
                        if queue.qsize() >= QUEUE - 1:
                            queue.put_nowait(None)  # marks the gap (the last slot is kept for it)
                            break
                        queue.put_nowait(row)
            if len(rows) < PAGE:
                await asyncio.sleep(self.interval)

    async def follow(self, after: int | None, visible: Callable[[JobChange], bool],
                     follow: bool = True) -> AsyncIterator[JobChange]:
        """Events after `after` (None: from now on), then live ones if `follow`."""
        queue: asyncio.Queue[JobChange | None] = asyncio.Queue(QUEUE)
        if follow:
            self.followers.add(queue)
            self.wake.set()
        try:
            cursor = await self.newest() if after is None else after  # rows up to it are skipped below
            while True:  # catch up from the table
                rows = await self.store.read(lambda c, a=cursor: _page(c, a))
                for row in rows:
                    if visible(row):
                        yield row
                if rows:
                    cursor = rows[-1].seq
                if len(rows) < PAGE:
                    break
            if not follow:
                return
            # "live from here": a reader that loads a view now and applies what follows misses nothing
            yield JobChange(seq=cursor, kind="heartbeat", time=datetime.now(timezone.utc))
            while True:
                try:
                    row = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT)
                except asyncio.TimeoutError:
                    yield JobChange(seq=cursor, kind="heartbeat", time=datetime.now(timezone.utc))
                    continue
                if row is None:  # this follower lost events: say so, and go on from the newest
                    while not queue.empty():
                        queue.get_nowait()
                    cursor = self.last
                    yield JobChange(seq=cursor, kind="resync", time=datetime.now(timezone.utc))
                    continue
                if row.seq <= cursor:
                    continue  # already sent while catching up
                cursor = row.seq
                if visible(row):
                    yield row
        finally:
            self.followers.discard(queue)


def visible_to(tenant: str | None, admin: bool) -> Callable[[JobChange], bool]:
    if admin:
        return lambda _row: True
    return lambda row: row.tenant == tenant


def encode(row: Any) -> bytes:
    return row.model_dump_json(exclude_none=True).encode() + b"\n"

"""Leader election among daemons that share one PostgreSQL: a lease row, renewed by its holder
every `heartbeat_interval / 3` and expiring after `heartbeat_interval`, with the database's own
clock (no skew between machines). Every new holder bumps `epoch`; the store checks the lease in
each write transaction (`fence`), so a deposed leader that wakes up cannot write.

On SQLite there is one daemon per file (a file lock), so it simply leads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from ...errors import SageOpsError
from ..storage import store as st
from ..storage.database import LEASE, fetchone, insert_many, update

log = logging.getLogger(__name__)
NAME = "leader"


# -- the lease row (run inside the writer's transaction) --------------------------------------
def db_now(conn: Connection) -> float:
    """The database's clock on PostgreSQL (one clock for every daemon), ours on SQLite."""
    if conn.dialect.name == "postgresql":
        return float(conn.exec_driver_sql("SELECT EXTRACT(EPOCH FROM clock_timestamp())").scalar())
    return time.time()


def lease_row(conn: Connection, name: str) -> Any:
    return conn.execute(select(LEASE).where(LEASE.c.name == name)).first()


def insert_lease(conn: Connection, row: dict[str, Any]) -> None:
    insert_many(conn, LEASE, [row])


def take_lease(conn: Connection, name: str, old_epoch: int, values: dict[str, Any]) -> bool:
    return update(conn, LEASE, values, {"name": name, "epoch": old_epoch}) == 1


def renew_lease(conn: Connection, name: str, holder: str, epoch: int, now: float, expires: float) -> bool:
    return update(conn, LEASE, {"renewed_at": now, "expires_at": expires},
                  {"name": name, "holder": holder, "epoch": epoch}, "expires_at > ?", [now]) == 1


def release_lease(conn: Connection, name: str, holder: str, epoch: int, now: float) -> bool:
    return update(conn, LEASE, {"expires_at": now}, {"name": name, "holder": holder, "epoch": epoch}) == 1


def lease_held(conn: Connection, name: str, holder: str, epoch: int) -> bool:
    """Is the lease ours and alive? On PostgreSQL the row stays share-locked until commit, so a
    takeover waits for this transaction instead of overlapping it."""
    lock = " FOR SHARE" if conn.dialect.name == "postgresql" else ""
    return fetchone(conn, f"SELECT 1 FROM {LEASE.name} WHERE name = ? AND holder = ? AND epoch = ? "
                          f"AND expires_at > ?{lock}", [name, holder, epoch, db_now(conn)]) is not None


class NotLeader(SageOpsError):
    """A write reached a standby (or a leader that just lost its lease)."""

    status, code = 503, "not_leader"


@dataclass
class LeaseView:
    holder: str | None
    address: str | None
    epoch: int
    age: float | None  # seconds since the holder last renewed
    expires_in: float | None


class Leadership:
    def __init__(self, store: st.Store, heartbeat: float, address: str | None,
                 on_elected: Callable[[], Awaitable[None]], on_deposed: Callable[[], Awaitable[None]]) -> None:
        self.store = store
        self.shared = not store.url.startswith("sqlite")
        self.heartbeat = heartbeat
        self.address = address
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.epoch = 0
        self.is_leader = not self.shared
        if self.shared:
            store.fence = self._refuse  # until elected, this daemon writes nothing
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.leader: LeaseView | None = None

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "standby"

    # -- database operations (run in the writer's transaction) --------------------------------
    def _acquire(self, conn: Connection) -> int | None:
        """Take the lease if nobody holds it or it expired; the new epoch, or None."""
        ttl, now = self.heartbeat, db_now(conn)
        row = lease_row(conn, NAME)
        if row is None:
            insert_lease(conn, {"name": NAME, "holder": self.me, "address": self.address, "epoch": 1,
                                   "acquired_at": now, "renewed_at": now, "expires_at": now + ttl})
            return 1
        if row.expires_at > now and row.holder != self.me:
            return None
        epoch = row.epoch + 1
        moved = take_lease(conn, NAME, row.epoch, {"holder": self.me, "address": self.address, "epoch": epoch,
                                                      "acquired_at": now, "renewed_at": now, "expires_at": now + ttl})
        return epoch if moved else None

    def _renew(self, conn: Connection) -> bool:
        now = db_now(conn)
        return renew_lease(conn, NAME, self.me, self.epoch, now, now + self.heartbeat)

    def fence(self, conn: Connection) -> None:
        """First statement of every leader write transaction: the lease must still be ours and
        alive. It locks the row (shared) until commit, so no standby can take over mid-write."""
        if self.shared and not lease_held(conn, NAME, self.me, self.epoch):
            raise NotLeader("this daemon lost its leadership; nothing was written")

    # -- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        if not self.shared:
            await self.on_elected()
            return
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away: we cannot know we lead
                log.error("lease: %s", exc)
                if self.is_leader:
                    await self._lose("the database is unreachable")
            await asyncio.sleep(self.heartbeat / 3)

    async def _step(self) -> None:
        if self.is_leader:
            if not await self.store.write(self._renew, fenced=False):
                await self._lose("another daemon holds the lease")
        else:
            epoch = await self.store.write(self._acquire, fenced=False)
            if epoch is not None:
                self.epoch, self.is_leader = epoch, True
                log.warning("elected leader (epoch %d)", epoch)
                await self.on_elected()  # loads the queue (reads only) before any write is allowed
                self.store.fence = self.fence
        self.leader = await self.store.read(self.view)

    async def resign(self) -> None:
        """On a clean stop, after the last write: end our lease now, so a standby (or this daemon
        restarted) leads at its next step instead of waiting out the lease."""
        if not (self.shared and self.is_leader):
            return
        self.is_leader = False
        self.store.fence = self._refuse
        try:
            await self.store.write(lambda conn: release_lease(conn, NAME, self.me, self.epoch, db_now(conn)),
                                   fenced=False)
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires
            log.warning("lease not released (it expires in %.0f s): %s", self.heartbeat, exc)
        else:
            log.info("lease released (epoch %d)", self.epoch)

    async def _lose(self, why: str) -> None:
        log.warning("no longer the leader (epoch %d): %s", self.epoch, why)
        self.is_leader = False
        self.store.fence = self._refuse
        await self.on_deposed()

    def _refuse(self, _conn: Connection) -> None:
        where = self.leader.address if self.leader and self.leader.address else "unknown (no leader yet)"
        raise NotLeader(f"this daemon is a standby; the leader is at {where}")

    def view(self, conn: Connection) -> LeaseView | None:
        row = lease_row(conn, NAME)
        if row is None:
            return None
        now = db_now(conn)
        return LeaseView(row.holder, row.address, row.epoch, round(now - row.renewed_at, 3),
                         round(row.expires_at - now, 3))

    def describe(self) -> dict[str, Any]:
        lease = self.leader
        return {"role": self.role, "me": self.me, "epoch": self.epoch if self.is_leader else None,
                "leader": None if lease is None else {"holder": lease.holder, "address": lease.address,
                                                      "epoch": lease.epoch, "lease_age_s": lease.age,
                                                      "expires_in_s": lease.expires_in},
                "heartbeat_interval": self.heartbeat if self.shared else None}

"""What the elastic pools' loop remembers of each host (tables.PoolHost), kept so that after a
restart or a failover the new leader knows which hosts are set aside, which nodes were idle since
when, and which were up (a node found gone is then a loss, refilled, not a stranger)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, select

from .store import Store
from .tables import PoolHost

P = PoolHost.__table__


def load_pool_hosts(conn: Connection) -> list[PoolHost]:
    return [PoolHost.model_validate(dict(row._mapping)) for row in conn.execute(select(P)).all()]


def save_pool_hosts(conn: Connection, rows: Sequence[PoolHost]) -> None:
    """Each row replaces what was kept of its (pool, host)."""
    for row in rows:
        conn.execute(delete(P).where(P.c.pool == row.pool, P.c.host == row.host))
        conn.execute(P.insert().values(**row.model_dump()))


class StoredPoolHosts:
    """The pools' memory in the daemon's database (the autoscaler's `PoolMemoryStore`); its writes
    are fenced, so a deposed leader's last pass changes nothing."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def load(self) -> list[PoolHost]:
        return await self.store.read(load_pool_hosts)

    async def save(self, rows: list[PoolHost]) -> None:
        await self.store.write(lambda c: save_pool_hosts(c, rows))

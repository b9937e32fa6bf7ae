"""Opening the database: the engine, one daemon per SQLite file, the schema through Alembic
migrations, and the raw statements the hot paths use (one place for the dialect differences)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import operator
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine, event, inspect, make_url
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from ...errors import Conflict
from .tables import (
    Attempt,
    AuditEvent,
    Dependency,
    IdempotencyKey,
    Job,
    JobCount,
    JobEvent,
    Lease,
    Meta,
    PeerUser,
    PipelineStats,
    Tenant,
    Token,
)

log = logging.getLogger(__name__)
JOB, ATTEMPT, EVENT, META, TOKEN, DEP, IDEM, LEASE = (  # type: ignore[attr-defined]
    Job.__table__, Attempt.__table__, JobEvent.__table__, Meta.__table__, Token.__table__,  # type: ignore
    Dependency.__table__, IdempotencyKey.__table__, Lease.__table__)  # type: ignore[attr-defined]
TENANT, PEER, AUDIT = Tenant.__table__, PeerUser.__table__, AuditEvent.__table__  # type: ignore[attr-defined]
PIPELINE, COUNT = PipelineStats.__table__, JobCount.__table__  # type: ignore[attr-defined]

T = TypeVar("T")


def make_engine(url: str, synchronous: str = "FULL") -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)


MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001"  # the schema databases made before Alembic (issues 2-3) are brought up to


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema with Alembic, on SQLite and PostgreSQL alike. A
    database made before migrations existed is first completed in place to the baseline (new
    nullable columns, tables and indexes; nothing dropped) and stamped. Daemons sharing one
    PostgreSQL take turns (an advisory lock), so two starting at once do not race."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(741526)")
        cfg.attributes["connection"] = conn
        names = set(inspect(conn).get_table_names())
        if "job" in names and "alembic_version" not in names:
            _complete_legacy(conn)
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")


def _complete_legacy(conn: Connection) -> None:
    baseline = [JOB, ATTEMPT, EVENT, META, TOKEN, DEP, IDEM]
    SQLModel.metadata.create_all(conn, tables=baseline)
    insp = inspect(conn)
    for table in baseline:
        have = {c["name"] for c in insp.get_columns(table.name)}
        for col in table.columns:
            if col.name not in have and col.nullable:
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {col.name} "
                                     f"{col.type.compile(dialect=conn.dialect)}")
                log.info("database: added column %s.%s", table.name, col.name)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def lock_sqlite(url: str) -> int | None:
    """One daemon per SQLite file: a second one (another state dir, same `--db`) is refused
    instead of interleaving its writes with the first one's."""
    path = make_url(url).database
    if not url.startswith("sqlite") or not path or path == ":memory:":
        return None
    lock = Path(path).resolve().with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner_only_files(Path(path))
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Conflict(f"another sage-ops daemon is using {path}; SQLite is single-node "
                       "(use PostgreSQL for several daemons)") from None
    return fd


def owner_only_files(db: Path) -> None:
    """The SQLite file made 0600 before SQLite opens it (its WAL and shared-memory files take the
    database file's mode), and any of them an older version left 0644 made 0600."""
    os.close(os.open(db, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{db}{suffix}", 0o600)


# -- raw statements --------------------------------------------------------------------------
# The hot writes go straight to the DB-API cursor of the writer's connection (same transaction):
# SQLAlchemy's statement machinery cost ~150 us per statement, several times the statement.
def native(conn: Connection, statement: str) -> str:
    """`?` placeholders in this driver's own style."""
    return statement if conn.dialect.paramstyle == "qmark" else statement.replace("?", "%s")


def _on_cursor(conn: Connection, statement: str, params: Sequence[Any], take: Callable[[Any], T]) -> T:
    """Run one statement on the driver's own cursor: for hot paths, where building a SQLAlchemy
    statement would cost more than running it."""
    cur = conn.connection.cursor()
    try:
        cur.execute(native(conn, statement), params)
        return take(cur)
    finally:
        cur.close()


def execute(conn: Connection, sql: str, params: Sequence[Any]) -> int:
    return _on_cursor(conn, sql, params, lambda cur: cur.rowcount)


def insert_many(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    # in C: 0.03 s for 50,000 job rows where a generator took 0.07; of one key it gives the value, not a tuple
    values = operator.itemgetter(*cols) if len(cols) > 1 else lambda r: (r[cols[0]],)
    cur = conn.connection.cursor()
    try:
        cur.executemany(native(conn, sql), [values(r) for r in rows])
    finally:
        cur.close()


IN_MAX = 512  # ids in one IN (...) list at most


def id_chunks(ids: Iterable[str]) -> Iterator[list[str]]:
    """`ids` (each once, in order) in lists for `IN (...)`, each padded to a power of two by
    repeating its last id. A query then has at most ten shapes (1, 2, 4 ... 512 ids), where one per
    length filled each pooled connection's cache of 128 prepared statements, ~30 KB each for a few
    hundred ids: the soak's memory grew for 26 minutes, then stopped."""
    ids = list(dict.fromkeys(ids))
    for i in range(0, len(ids), IN_MAX):
        chunk = ids[i:i + IN_MAX]
        yield chunk + chunk[-1:] * ((1 << (len(chunk) - 1).bit_length()) - len(chunk))


def in_marks(chunk: Sequence[Any]) -> str:
    """The placeholders of an IN (...) list of `chunk`."""
    return ", ".join("?" * len(chunk))


def fetchone(conn: Connection, statement: str, params: Sequence[Any]) -> Any:
    return _on_cursor(conn, statement, params, lambda cur: cur.fetchone())


def fetchall(conn: Connection, statement: str, params: Sequence[Any]) -> list[Any]:
    return _on_cursor(conn, statement, params, lambda cur: cur.fetchall())


def update(conn: Connection, table: Any, values: dict[str, Any], where: dict[str, Any], extra: str = "",
           extra_params: Sequence[Any] = ()) -> int:
    """UPDATE table SET values WHERE every `where` column equals its value (AND `extra`); the
    number of rows changed (a compare-and-set when `where` holds the expected old value)."""
    sets = ", ".join(f"{k} = ?" for k in values)
    cond = " AND ".join([*(f"{k} = ?" for k in where), *([extra] if extra else [])])
    return execute(conn, f"UPDATE {table.name} SET {sets} WHERE {cond}",
                   [*values.values(), *where.values(), *extra_params])

"""Which shipped packages (workdir.package_key) are still wanted, so retention can let the others
go: each submit that names a package marks it used (`packages/TENANT/SHA.used`, holding the time),
and a package goes once its mark is older than the retention cutoff and no unfinished job names
it. A finished job retried after that fails its attempt, saying its package is gone."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from ...lifecycle import ACTIVE
from ...workdir import package_key
from .database import JOB, fetchone

if TYPE_CHECKING:
    from .blobs import BlobStore

MARK = ".used"


def mark_key(sha256: str, tenant: str | None) -> str:
    return package_key(sha256, tenant).removesuffix(".tar.gz") + MARK


def mark_used(blobs: BlobStore, sha256: str, tenant: str | None, now: float | None = None) -> None:
    """This package was named by a submit now (blocking: a worker thread)."""
    blobs.put(mark_key(sha256, tenant), repr(time.time() if now is None else now).encode())


def wanted_by_a_job(conn: Connection, sha256: str, tenant: str | None) -> bool:
    """Does an unfinished job of `tenant` name this package? (Their specs are few: the active jobs.)"""
    marks = ", ".join("?" for _ in ACTIVE)
    tenant_is = "tenant IS NULL" if tenant is None else "tenant = ?"
    row = fetchone(conn, f"SELECT 1 FROM {JOB.name} WHERE status IN ({marks}) AND {tenant_is} AND spec LIKE ? "
                         "LIMIT 1", [*(s.value for s in ACTIVE), *([] if tenant is None else [tenant]),
                                     f'%"sha256":"{sha256}"%'])
    return row is not None


def stale(blobs: BlobStore, cutoff: float, start_clocks: bool = True) -> list[tuple[str, str | None]]:
    """(sha256, tenant) of the packages last used before `cutoff` (blocking: a worker thread). A
    package without a mark (uploaded, never submitted) counts as used when it was found
    (`start_clocks`: its mark is written then; a dry run writes nothing)."""
    found: list[tuple[str, str | None]] = []
    keys = blobs.keys("packages")
    marked = {k for k in keys if k.endswith(MARK)}
    for key in keys:
        if not key.endswith(".tar.gz"):
            continue
        _, tenant_dir, name = key.split("/", 2)
        sha, tenant = name.removesuffix(".tar.gz"), None if tenant_dir == "_" else tenant_dir
        mark = mark_key(sha, tenant)
        if mark not in marked:
            if start_clocks:
                mark_used(blobs, sha, tenant)  # its clock starts now
            continue
        try:
            used = float(blobs.get(mark).decode())
        except (FileNotFoundError, ValueError):
            continue
        if used < cutoff:
            found.append((sha, tenant))
    return found


def remove(blobs: BlobStore, sha256: str, tenant: str | None) -> None:
    """The package, then its mark (a crash between leaves a mark alone, which `stale` ignores)."""
    blobs.delete([package_key(sha256, tenant)])
    blobs.delete([mark_key(sha256, tenant)])

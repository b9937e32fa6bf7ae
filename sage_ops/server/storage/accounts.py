"""The database side of access control: tenants and their quotas, local users, tokens (hashes
only) and the audit trail. Plain functions run in the store's reader or writer transaction."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from ...access import AuditEntry, QuotaChange, Quotas, Role, TenantCreate, TokenCreate, TokenView
from ...cluster import PoolEventView
from ...errors import Conflict, NotFound
from ...lifecycle import ACTIVE
from .database import AUDIT, JOB, PEER, TENANT, TOKEN, insert_many, update
from .store import utc

QUOTA_FIELDS = ("max_running", "max_cpu", "max_gpu", "max_queued", "weight")


# -- tenants ---------------------------------------------------------------------------------
def quotas_of(row: Any) -> Quotas:
    return Quotas.model_construct(**{k: getattr(row, k) for k in QUOTA_FIELDS})


def tenants(conn: Connection) -> list[Any]:
    return list(conn.execute(select(TENANT).order_by(TENANT.c.name)).all())


def tenant_row(conn: Connection, name: str) -> Any:
    row = conn.execute(select(TENANT).where(TENANT.c.name == name)).first()
    if row is None:
        raise NotFound(f"no such tenant: {name}")
    return row


def create_tenant(conn: Connection, req: TenantCreate, now: float) -> Any:
    if conn.execute(select(TENANT.c.name).where(TENANT.c.name == req.name)).first() is not None:
        raise Conflict(f"tenant {req.name} exists (change its quotas with `sage-ops tenant update`)")
    insert_many(conn, TENANT, [{"name": req.name, **req.model_dump(include={*QUOTA_FIELDS, "run_as"}),
                                "created_at": now}])
    return tenant_row(conn, req.name)


def update_tenant(conn: Connection, name: str, change: QuotaChange) -> Any:
    tenant_row(conn, name)
    values = change.model_dump(exclude_unset=True)
    if values.get("weight", 1.0) is None:
        values.pop("weight")  # a weight cannot be cleared, only changed
    if values:
        update(conn, TENANT, values, {"name": name})
    return tenant_row(conn, name)


def delete_tenant(conn: Connection, name: str, now: float) -> int:
    """Remove a tenant without active jobs; its tokens are revoked and its users unmapped.
    Returns the number of tokens revoked."""
    tenant_row(conn, name)
    active = conn.execute(select(func.count()).select_from(JOB).where(
        JOB.c.tenant == name, JOB.c.status.in_([s.value for s in ACTIVE]))).scalar()
    if active:
        raise Conflict(f"tenant {name} has {active} active jobs; cancel them first")
    revoked = revoke_all(conn, name, now)
    conn.execute(delete(PEER).where(PEER.c.tenant == name))
    conn.execute(delete(TENANT).where(TENANT.c.name == name))
    return revoked


# -- local users -----------------------------------------------------------------------------
def peers(conn: Connection) -> list[Any]:
    return list(conn.execute(select(PEER)).all())


def map_user(conn: Connection, tenant: str, uid: int, role: Role) -> None:
    tenant_row(conn, tenant)
    conn.execute(delete(PEER).where(PEER.c.uid == uid))
    insert_many(conn, PEER, [{"uid": uid, "tenant": tenant, "role": role.value}])


def unmap_user(conn: Connection, tenant: str, uid: int) -> None:
    if not conn.execute(delete(PEER).where(PEER.c.uid == uid, PEER.c.tenant == tenant)).rowcount:
        raise NotFound(f"uid {uid} is not a user of tenant {tenant}")


# -- tokens ----------------------------------------------------------------------------------
def token_view(row: Any) -> TokenView:
    return TokenView(id=row.id, name=row.name, tenant=row.tenant, role=Role(row.role), rate_limit=row.rate_limit,
                     created_at=utc(row.created_at), expires_at=utc(row.expires_at),
                     revoked_at=utc(row.revoked_at), last_used_at=utc(row.last_used_at))


def create_token(conn: Connection, req: TokenCreate, digest: str, now: float) -> Any:
    if req.tenant is not None:
        tenant_row(conn, req.tenant)
    expires = now + req.expires_in if req.expires_in else None
    conn.execute(insert(TOKEN), [{"name": req.name, "tenant": req.tenant, "hash": digest,
                                  "admin": req.role is Role.ADMIN, "role": req.role.value,
                                  "rate_limit": req.rate_limit, "expires_at": expires, "created_at": now}])
    return conn.execute(select(TOKEN).where(TOKEN.c.hash == digest)).one()


def ensure_token(conn: Connection, name: str, digest: str, role: Role) -> None:
    """The local admin token of a TCP listener: recorded once, kept across restarts."""
    if conn.execute(select(TOKEN.c.id).where(TOKEN.c.hash == digest)).first() is None:
        create_token(conn, TokenCreate(name=name, role=role), digest, time.time())


def tokens(conn: Connection, tenant: str | None = None, revoked: bool = False) -> list[Any]:
    q = select(TOKEN).order_by(TOKEN.c.id)
    if tenant is not None:
        q = q.where(TOKEN.c.tenant == tenant)
    if not revoked:
        q = q.where(TOKEN.c.revoked_at.is_(None))
    return list(conn.execute(q).all())


def live_tokens(conn: Connection, now: float) -> list[Any]:
    """The tokens that may authenticate: not revoked, not expired."""
    return [r for r in tokens(conn) if r.expires_at is None or r.expires_at > now]


def revoke_token(conn: Connection, token_id: int, now: float) -> Any:
    row = conn.execute(select(TOKEN).where(TOKEN.c.id == token_id)).first()
    if row is None:
        raise NotFound(f"no such token: {token_id}")
    if row.revoked_at is None:
        update(conn, TOKEN, {"revoked_at": now}, {"id": token_id})
    return conn.execute(select(TOKEN).where(TOKEN.c.id == token_id)).one()


def revoke_all(conn: Connection, tenant: str, now: float) -> int:
    """Revoke every live token of `tenant` (which must exist); how many were."""
    tenant_row(conn, tenant)
    return update(conn, TOKEN, {"revoked_at": now}, {"tenant": tenant}, "revoked_at IS NULL")


def touch_tokens(conn: Connection, used: dict[int, float]) -> None:
    for token_id, when in used.items():
        update(conn, TOKEN, {"last_used_at": when}, {"id": token_id})


# -- audit -----------------------------------------------------------------------------------
def audit_rows(conn: Connection, since: float | None, tenant: str | None, actor: str | None,
               action: str | None, limit: int) -> list[AuditEntry]:
    """Newest first."""
    q = select(AUDIT)
    if since is not None:
        q = q.where(AUDIT.c.time >= since)
    if tenant is not None:
        q = q.where(AUDIT.c.tenant == tenant)
    if actor:
        q = q.where(AUDIT.c.actor == actor)
    if action:
        q = q.where(AUDIT.c.action == action)
    rows = conn.execute(q.order_by(AUDIT.c.id.desc()).limit(limit)).all()
    return [AuditEntry(id=r.id, time=utc(r.time), actor=r.actor, tenant=r.tenant, action=r.action, target=r.target,
                       status=r.status, detail=r.detail) for r in rows]


def pool_events(conn: Connection, pool: str, limit: int) -> list[PoolEventView]:
    """A pool's decisions (audit actions pool.KIND on POOL or POOL/HOST), newest first."""
    q = (select(AUDIT).where(AUDIT.c.action.startswith("pool."),
                             (AUDIT.c.target == pool) | AUDIT.c.target.startswith(f"{pool}/", autoescape=True))
         .order_by(AUDIT.c.id.desc()).limit(limit))
    return [PoolEventView(time=utc(r.time), kind=r.action.removeprefix("pool."),
                          host=r.target.partition("/")[2] or None, reason=r.detail or "")
            for r in conn.execute(q)]


def add_audit(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    insert_many(conn, AUDIT, list(rows))


def purge_audit(conn: Connection, before: float) -> None:
    conn.execute(delete(AUDIT).where(AUDIT.c.time < before))

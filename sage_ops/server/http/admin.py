"""HTTP routes of access control — tenants and their quotas, local users, tokens, the audit
trail, who-am-I — and the admin's Prometheus `/metrics`. Changing any of them is for admins;
members may read their own tenant."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from ...access import (
    AuditList,
    Identity,
    OwnToken,
    QuotaChange,
    TenantCreate,
    TenantView,
    TokenCreate,
    TokenCreated,
    TokenRevoke,
    TokenView,
    UserMap,
)
from ...errors import DaemonUnavailable, Forbidden, Invalid, NotFound
from ...retention import GcReport, GcRequest
from ..access.auth import TARGET, Principal, new_token
from ..services import metrics
from ..storage import accounts
from ..storage.store import utc

if TYPE_CHECKING:
    from .services import Services


def admin_only(caller: Callable[[Request], Principal]) -> Any:
    """The dependency of routes for admins only (403 for anyone else)."""

    def admin(who: Principal = Depends(caller)) -> Principal:
        if not who.admin:
            raise Forbidden(f"{who.actor} is not an admin")
        return who

    return Depends(admin)


def admin_routes(services: Services, caller: Callable[[Request], Principal]) -> APIRouter:
    router = APIRouter()
    store, scheduler = services.store, services.scheduler
    who_dep = Depends(caller)
    admin_dep = admin_only(caller)

    def view(row: Any) -> TenantView:
        use = scheduler.usage(row.name)
        return TenantView(name=row.name, quotas=accounts.quotas_of(row), created_at=utc(row.created_at),
                          run_as=row.run_as,
                          users=sorted(uid for uid, p in services.identities.users.items() if p.tenant == row.name),
                          **use)

    async def changed() -> None:
        """Tenants or tokens changed: the scheduler's quotas and the daemon's identities follow."""
        rows = await store.read(accounts.tenants)
        scheduler.set_quotas({r.name: accounts.quotas_of(r) for r in rows})
        await services.identities.refresh()

    @router.get("/v1/whoami", response_model=Identity)
    async def whoami(who: Principal = who_dep) -> Identity:
        return Identity(actor=who.actor, role=who.role, tenant=who.tenant, via=who.via)

    @router.get("/v1/tenants", response_model=list[TenantView])
    async def list_tenants(who: Principal = who_dep) -> list[TenantView]:
        rows = await store.read(accounts.tenants)
        return [view(r) for r in rows if who.admin or r.name == who.tenant]

    @router.get("/v1/tenants/{name}", response_model=TenantView)
    async def get_tenant(name: str, who: Principal = who_dep) -> TenantView:
        if not who.admin and name != who.tenant:
            raise NotFound(f"no such tenant: {name}")
        return view(await store.read(lambda c: accounts.tenant_row(c, name)))

    @router.post("/v1/tenants", status_code=201, response_model=TenantView)
    async def create_tenant(request: Request, req: TenantCreate, _: Principal = admin_dep) -> TenantView:
        request.scope[TARGET] = req.name
        if req.run_as is not None:
            services.run_as.check_user(req.run_as)
        row = await store.write(lambda c: accounts.create_tenant(c, req, time.time()))
        await changed()
        return view(row)

    @router.patch("/v1/tenants/{name}", response_model=TenantView)
    async def update_tenant(name: str, req: QuotaChange, _: Principal = admin_dep) -> TenantView:
        if req.run_as is not None:
            services.run_as.check_user(req.run_as)
        row = await store.write(lambda c: accounts.update_tenant(c, name, req))
        await changed()
        return view(row)

    @router.delete("/v1/tenants/{name}")
    async def delete_tenant(name: str, _: Principal = admin_dep) -> dict[str, Any]:
        revoked = await store.write(lambda c: accounts.delete_tenant(c, name, time.time()))
        await changed()
        return {"deleted": name, "tokens_revoked": revoked}

    @router.post("/v1/tenants/{name}/users", response_model=TenantView)
    async def map_user(name: str, req: UserMap, _: Principal = admin_dep) -> TenantView:
        if req.uid in (services.identities.owner, 0):
            raise Invalid(f"uid {req.uid} owns the daemon: it is always an admin")
        await store.write(lambda c: accounts.map_user(c, name, req.uid, req.role))
        await changed()
        return view(await store.read(lambda c: accounts.tenant_row(c, name)))

    @router.delete("/v1/tenants/{name}/users/{uid}", response_model=TenantView)
    async def unmap_user(name: str, uid: int = Path(ge=0, le=2**32 - 1), _: Principal = admin_dep) -> TenantView:
        await store.write(lambda c: accounts.unmap_user(c, name, uid))
        await changed()
        return view(await store.read(lambda c: accounts.tenant_row(c, name)))

    @router.post("/v1/tokens", status_code=201, response_model=TokenCreated)
    async def create_token(request: Request, req: TokenCreate, _: Principal = admin_dep) -> TokenCreated:
        if req.role.value != "admin" and req.tenant is None:
            raise Invalid("a member or viewer token needs --tenant")
        token, digest = new_token()
        row = await store.write(lambda c: accounts.create_token(c, req, digest, time.time()))
        request.scope[TARGET] = f"token {row.id} ({row.name})"
        await changed()
        return TokenCreated(token=token, **accounts.token_view(row).model_dump())

    @router.post("/v1/tokens/self", status_code=201, response_model=TokenCreated)
    async def own_token(request: Request, req: OwnToken, who: Principal = who_dep) -> TokenCreated:
        """A short-lived token with the caller's own role and tenant (`sage-ops web`'s login
        link): no more than the caller has. Only for the daemon's admins on its socket: a token
        holder has its token already (and minting more would outlive its revocation), and a
        socket user mapped to a tenant would get a token that runs jobs as the tenant's run_as
        user, who may not be that user."""
        if who.via != "unix":
            raise Forbidden("a token holder logs in with its own token (sage-ops web --token-file FILE)")
        if not who.admin:
            raise Forbidden(f"{who.actor} logs in to the dashboard with a token an admin made for it")
        name = re.sub(r"[^A-Za-z0-9_.@:-]", "-", f"web-{who.actor}")[:64]
        spec = TokenCreate(name=name, tenant=who.tenant, role=who.role, rate_limit=who.rate, expires_in=req.expires_in)
        token, digest = new_token()
        row = await store.write(lambda c: accounts.create_token(c, spec, digest, time.time()))
        request.scope[TARGET] = f"token {row.id} ({row.name})"
        await changed()
        return TokenCreated(token=token, **accounts.token_view(row).model_dump())

    @router.get("/v1/tokens", response_model=list[TokenView])
    async def list_tokens(tenant: str | None = None, revoked: bool = False,
                          _: Principal = admin_dep) -> list[TokenView]:
        rows = await store.read(lambda c: accounts.tokens(c, tenant, revoked))
        return [accounts.token_view(r) for r in rows]

    @router.delete("/v1/tokens/{token_id}", response_model=TokenView)
    async def revoke_token(token_id: int = Path(ge=1, le=2**62), _: Principal = admin_dep) -> TokenView:
        row = await store.write(lambda c: accounts.revoke_token(c, token_id, time.time()))
        await changed()
        return accounts.token_view(row)

    @router.post("/v1/tokens/revoke")
    async def revoke_tokens(request: Request, req: TokenRevoke, _: Principal = admin_dep) -> dict[str, int]:
        if not req.all:
            raise Invalid("say `all: true` to revoke every token of a tenant")
        request.scope[TARGET] = f"all tokens of {req.tenant}"
        n = await store.write(lambda c: accounts.revoke_all(c, req.tenant, time.time()))
        await changed()
        return {"revoked": n}

    @router.get("/v1/audit", response_model=AuditList)
    async def audit(since: datetime | None = None, tenant: str | None = None, actor: str | None = None,
                    action: str | None = None, limit: int = Query(1000, ge=1, le=100_000),
                    _: Principal = admin_dep) -> AuditList:
        """Admins only: a denial's row says what the denied caller must not learn."""
        if services.audit.pending:  # what just happened is part of the answer
            await services.audit.flush()
        rows = await store.read(lambda c: accounts.audit_rows(c, since.timestamp() if since else None, tenant,
                                                              actor, action, limit))
        return AuditList(events=rows)

    @router.post("/v1/gc", response_model=GcReport)
    async def gc(req: GcRequest, who: Principal = admin_dep) -> GcReport:
        """Admins only: a retention sweep now (finished jobs that ended more than `older_than` ago,
        default jobmanager.retention), in batches, each audited; with `dry_run` only what would go."""
        if services.retention is None:
            raise DaemonUnavailable("retention is not running in this daemon")
        return await services.retention.sweep(req.older_than, who.actor, req.dry_run)

    @router.get("/metrics", response_class=Response, include_in_schema=False)
    async def prometheus(_: Principal = admin_dep) -> Response:
        """Prometheus text format (admins: it covers every tenant)."""
        pools = services.pools.views() if services.pools is not None else []
        text = await metrics.prometheus_text(scheduler, store, services.ray, services.leadership, pools)
        return Response(text, media_type=metrics.CONTENT_TYPE)

    return router

"""HTTP routes of the cluster's machines and figures: the node list, adding a node over SSH with
its progress as NDJSON, drain and remove (admins), and the metrics series for charts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from ...cluster import NodeAdd, NodeDrain, NodeView, PoolEventView, PoolView
from ...errors import NotFound
from ...nodes.base import NAME_PATTERN
from ...telemetry import MetricsSeries
from ..access.auth import Principal
from ..services import metrics
from ..storage import accounts
from .admin import admin_only

if TYPE_CHECKING:
    from .services import Services

NODE = Path(pattern=NAME_PATTERN, max_length=63)
POOL = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
MAX_WINDOW = 366 * 86400.0


def cluster_routes(services: Services, caller: Callable[[Request], Principal]) -> APIRouter:
    router = APIRouter()
    who_dep, admin_dep = Depends(caller), admin_only(caller)
    nodes = services.provisioner

    @router.get("/v1/nodes", response_model=list[NodeView])
    async def list_nodes(_: Principal = who_dep) -> list[NodeView]:
        return await nodes.nodes()

    @router.get("/v1/pools", response_model=list[PoolView])
    async def list_pools(_: Principal = who_dep) -> list[PoolView]:
        """Each elastic pool as the leader's autoscaler last saw it."""
        return services.pools.views() if services.pools is not None else []

    @router.get("/v1/pools/{name}/events", response_model=list[PoolEventView])
    async def pool_events(name: str = POOL, limit: int = Query(200, ge=1, le=10_000),
                          _: Principal = admin_dep) -> list[PoolEventView]:
        """A pool's decisions, newest first, with their reasons (the audit log's pool.* entries)."""
        if services.pools is None or name not in {p.name for p in services.cfg.nodes.pools}:
            raise NotFound(f"no such pool: {name}")
        if services.audit.pending:  # what was just decided is part of the answer
            await services.audit.flush()
        return await services.store.read(lambda c: accounts.pool_events(c, name, limit))

    @router.get("/v1/nodes/{name}", response_model=NodeView)
    async def get_node(name: str = NODE, _: Principal = who_dep) -> NodeView:
        return await nodes.view(name)

    @router.post("/v1/nodes", status_code=202, response_model=NodeView)
    async def add_node(req: NodeAdd, _: Principal = admin_dep) -> NodeView:
        """Starts the bootstrap and answers at once; follow /v1/nodes/{name}/progress."""
        return await nodes.add(req)

    @router.get("/v1/nodes/{name}/progress")
    async def progress(name: str = NODE, _: Principal = who_dep) -> StreamingResponse:
        lines = nodes.follow(name)
        first = await anext(lines)  # a 404 before the stream starts

        async def body() -> AsyncIterator[bytes]:
            yield first.model_dump_json().encode() + b"\n"
            async for line in lines:
                yield line.model_dump_json().encode() + b"\n"

        return StreamingResponse(body(), media_type="application/x-ndjson")

    @router.post("/v1/nodes/{name}/drain", response_model=NodeView)
    async def drain(req: NodeDrain | None = None, name: str = NODE, _: Principal = admin_dep) -> NodeView:
        return await nodes.drain(name, bool(req and req.force))

    @router.delete("/v1/nodes/{name}")
    async def remove(name: str = NODE, force: bool = False, _: Principal = admin_dep) -> dict[str, Any]:
        return await nodes.remove(name, force)

    @router.get("/v1/metrics/series", response_model=MetricsSeries)
    async def series(window: float = Query(3600, gt=0, le=MAX_WINDOW, description="seconds back from now"),
                     _: Principal = who_dep) -> MetricsSeries:
        """Cluster-wide figures (no job names or tenants): every caller may chart them."""
        now = time.time()
        return await services.store.read(lambda c: metrics.series(c, services.cfg.metrics, window, now))

    return router

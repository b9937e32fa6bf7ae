"""HTTP routes only: validate, delegate to the scheduler/store, serialize. Plus auth and the
single mapping of errors to `{"error": {"code", "message"}}` bodies."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import SageOpsError, from_body
from ..lifecycle import JobStatus, is_terminal
from ..schemas import (
    BatchCancel,
    BatchRetry,
    BatchSubmit,
    BulkResult,
    GraphView,
    Health,
    JobEventView,
    JobFilter,
    JobList,
    JobRefList,
    JobResult,
    JobSpec,
    JobView,
    PriorityChange,
    Stats,
)
from . import store as st
from .database import redact_url

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return 400, "malformed_json", "request body is not valid JSON"
    loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",))
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return 422, "invalid", f"{loc}: {msg}{more}" if loc else msg + more


IDEMPOTENCY_KEY = Header(None, alias="Idempotency-Key", min_length=1, max_length=128,
                         description="a retried submit with the same key returns the same jobs (200), not new ones")


def _json(model: BaseModel, status: int = 200) -> Response:
    """Serialize once (FastAPI would validate the model again before serializing)."""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def create_app(daemon: Daemon) -> FastAPI:
    app = FastAPI(title="sage-ops", version=__version__, docs_url=None, redoc_url=None)
    store = daemon.store

    @app.exception_handler(SageOpsError)
    async def _sage(_req: Request, exc: SageOpsError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(*_validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal", f"internal error ({exc.__class__.__name__}); see the daemon log")

    async def job_or_404(job_id: str) -> JobView:
        return await store.read(lambda c: st.get_job(c, job_id))

    @app.post("/v1/jobs", status_code=201, response_model=JobView)
    async def submit(spec: JobSpec, key: str | None = IDEMPOTENCY_KEY) -> Response:
        views, new = await daemon.scheduler.submit([spec], key=key)
        return _json(views[0], 201 if new else 200)

    @app.post("/v1/jobs/batch", status_code=201, response_model=JobRefList)
    async def submit_batch(batch: BatchSubmit, key: str | None = IDEMPOTENCY_KEY) -> Response:
        refs, new = await daemon.scheduler.submit(batch.jobs, views=False, batch=True, key=key)
        return Response(json.dumps({"jobs": refs}), status_code=201 if new else 200, media_type="application/json")

    @app.get("/v1/jobs", response_model=JobList)
    async def list_jobs(status: list[JobStatus] | None = Query(None), name: str | None = None,
                        tenant: str | None = None, since: datetime | None = None, until: datetime | None = None,
                        limit: int = Query(100, ge=1, le=100_000), cursor: str | None = None) -> JobList:
        flt = JobFilter(status=status or [], name=name, tenant=tenant, since=since, until=until)
        jobs, nxt = await store.read(lambda c: st.list_jobs(c, flt, limit, cursor))
        return JobList(jobs=jobs, next_cursor=nxt)

    @app.post("/v1/jobs/cancel", response_model=BulkResult)
    async def cancel_many(req: BatchCancel) -> BulkResult:
        return await daemon.scheduler.cancel(req.ids, req.filter)

    @app.post("/v1/jobs/retry", response_model=BulkResult)
    async def retry_many(req: BatchRetry) -> BulkResult:
        return await daemon.scheduler.retry(req.ids, req.filter)

    @app.get("/v1/jobs/{job_id}", response_model=JobView)
    async def get_job(job_id: str) -> JobView:
        return await job_or_404(job_id)

    @app.get("/v1/jobs/{job_id}/result", response_model=JobResult)
    async def get_result(job_id: str) -> JobResult:
        status, result = await store.read(lambda c: st.get_result(c, job_id))
        return JobResult(id=job_id, status=status, result=result)

    @app.get("/v1/jobs/{job_id}/events", response_model=list[JobEventView])
    async def get_events(job_id: str) -> list[JobEventView]:
        return await store.read(lambda c: st.job_events(c, job_id))

    @app.get("/v1/jobs/{job_id}/wait", response_model=JobView)
    async def wait(job_id: str, timeout: float = Query(30, ge=0, le=300)) -> JobView:
        return await daemon.scheduler.wait(job_id, timeout)

    @app.get("/v1/jobs/{job_id}/logs")
    async def logs(job_id: str, follow: bool = False, tail: int | None = Query(None, ge=0)) -> StreamingResponse:
        await job_or_404(job_id)

        async def done() -> bool:
            status = await store.read(lambda c: st.current_status(c, job_id))
            return status is None or is_terminal(status)

        async def body() -> AsyncIterator[bytes]:
            if follow:
                async for entry in daemon.logs.follow(job_id, done, tail):
                    yield entry.model_dump_json().encode() + b"\n"
            else:
                entries, _ = daemon.logs.read(job_id)
                if tail is not None:
                    entries = entries[-tail:] if tail else []
                for entry in entries:
                    yield entry.model_dump_json().encode() + b"\n"

        return StreamingResponse(body(), media_type="application/x-ndjson")

    async def one(result: BulkResult, job_id: str) -> JobView:
        if result.errors:
            raise from_body(result.errors[0])
        return await job_or_404(job_id)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobView)
    async def cancel(job_id: str) -> JobView:
        return await one(await daemon.scheduler.cancel([job_id]), job_id)

    @app.post("/v1/jobs/{job_id}/retry", response_model=JobView)
    async def retry(job_id: str) -> JobView:
        return await one(await daemon.scheduler.retry([job_id]), job_id)

    @app.post("/v1/jobs/{job_id}/priority", response_model=JobView)
    async def set_priority(job_id: str, req: PriorityChange) -> JobView:
        return await daemon.scheduler.set_priority(job_id, req.priority)

    @app.get("/v1/jobs/{job_id}/graph", response_model=GraphView)
    async def graph(job_id: str) -> GraphView:
        return await daemon.scheduler.graph(job_id)

    @app.get("/v1/stats", response_model=Stats)
    async def stats() -> Stats:
        counts = await store.read(st.counts_by_status)
        total = sum(counts.values())
        active = sum(n for s, n in counts.items() if not is_terminal(s))
        by_status = {s.value: counts.get(s.value, 0) for s in JobStatus}
        return Stats(total_jobs=total, active_jobs=active, by_status=by_status,
                     queue_depth=daemon.scheduler.queue_depth(), running_jobs=counts.get("RUNNING", 0),
                     max_jobs=daemon.cfg.jobmanager.max_jobs, waiting_jobs=len(daemon.scheduler.waiting.blockers),
                     retrying_jobs=len(daemon.scheduler.later), scheduled_jobs=daemon.scheduler.decisions,
                     scheduler_seconds=round(daemon.scheduler.decision_seconds, 6))

    @app.get("/v1/health", response_model=Health)
    async def health() -> Health:
        try:
            latency = await store.read(lambda _c: store.ping())
            db = {"ok": True, "url": redact_url(store.url), "latency_ms": round(latency, 2)}
        except SageOpsError as exc:
            db = {"ok": False, "url": redact_url(store.url), "detail": exc.message}
        ray = daemon.backend.health()
        lead = daemon.leadership
        ok = db["ok"] and (not lead.is_leader or (ray.connected and daemon.scheduler.ready))
        return Health(status="ok" if ok else "degraded", version=__version__, pid=os.getpid(),
                      uptime_s=round(time.time() - daemon.started_at, 3), socket=str(daemon.socket_path),
                      tcp=daemon.tcp_address, database=db, ray=ray, role=lead.role,
                      leader=lead.describe()["leader"])

    return app


class TokenAuth:
    """ASGI wrapper for the TCP listener: every request needs `Authorization: Bearer <token>`."""

    def __init__(self, app: Callable[..., Awaitable[None]], hashes: Callable[[], set[str]]) -> None:
        self.app = app
        self.hashes = hashes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            token = header[7:].strip() if header[:7].lower() == "bearer " else ""
            digest = hashlib.sha256(token.encode()).hexdigest() if token else ""
            if not digest or not any(hmac.compare_digest(digest, h) for h in self.hashes()):
                response = _error(401, "unauthorized", "a valid bearer token is required")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

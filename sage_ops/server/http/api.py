"""HTTP routes only: validate, delegate to the scheduler/store, serialize; the single mapping of
errors to `{"error": {"code", "message"}}` bodies; and tenant isolation, stated once here: a job
of another tenant is answered exactly like a job that does not exist (404), so ids never leak.
Who the caller is was settled before any route runs (auth.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ... import __version__
from ...bodies import BatchCancel, BatchRetry, BatchSubmit, JobFilter, JobUpdate, PriorityChange
from ...config import redact_url
from ...errors import Forbidden, NotFound, SageOpsError, from_body
from ...lifecycle import JobStatus, is_terminal
from ...schemas import JobSpec
from ...telemetry import Health, Stats
from ...views import BulkResult, GraphView, JobEventView, JobList, JobRefList, JobResult, JobView
from ..access.auth import DENIED, PRINCIPAL, TARGET, Principal
from ..allocator import GiveBack
from ..backend.containment import mode as containment_mode
from ..scheduling.run_as import RunAs
from ..services.event_stream import visible_to
from ..storage import store as st
from ..storage.job_counts import counts_by_status, failed_since
from ..storage.job_sort import SORTS, check_sort
from .admin import admin_routes
from .cluster import cluster_routes
from .packages import package_routes, refuse_missing

if TYPE_CHECKING:
    from .services import Services

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _shown(text: str, limit: int = 200) -> str:
    """User-supplied text in an error message: one line, and short."""
    flat = "".join(ch if ch.isprintable() else "?" for ch in text)
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return 400, "malformed_json", "request body is not valid JSON"
    loc = _shown(".".join(str(p) for p in first.get("loc", ()) if p not in ("body",)))
    msg = _shown(str(first.get("msg", "invalid request")).removeprefix("Value error, "), 500)
    if first.get("type") == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return 422, "invalid", f"{loc}: {msg}{more}" if loc else msg + more


IDEMPOTENCY_KEY = Header(None, alias="Idempotency-Key", min_length=1, max_length=128,
                         description="a retried submit with the same key returns the same jobs (200), not new ones")


def _json(model: BaseModel, status: int = 200) -> Response:
    """Serialize once (FastAPI would validate the model again before serializing)."""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def caller(request: Request) -> Principal:
    return request.scope[PRINCIPAL]


WHO = Depends(caller)


def scoped(who: Principal, flt: JobFilter | None) -> JobFilter | None:
    """A member's filter covers its own tenant only; None: it can match nothing."""
    if who.admin or flt is None:
        return flt
    if flt.tenant not in (None, who.tenant):
        return None
    return flt.model_copy(update={"tenant": who.tenant})


def owned(who: Principal, specs: list[JobSpec], run_as: RunAs, tenant_users: Mapping[str, str | None]
          ) -> list[JobSpec]:
    """A member's jobs belong to its tenant (said or not); another tenant is refused. Every job
    gets the Unix user it runs as from who submitted it (run_as.py), whatever the request said."""
    out = []
    for spec in specs:
        if not who.admin and spec.tenant not in (None, who.tenant):
            raise Forbidden(f"{who.actor} submits to tenant {who.tenant} only")
        if not who.admin and not spec.tenant:
            spec = spec.model_copy(update={"tenant": who.tenant})
        user = run_as.for_job(spec, uid=who.uid, admin=who.admin, tenant_users=tenant_users)
        out.append(spec if spec.run_as == user else spec.model_copy(update={"run_as": user}))
    return out


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="sage-ops", version=__version__, docs_url=None, redoc_url=None)
    store, scheduler = services.store, services.scheduler
    packages = services.blobs  # shipped working directories (None: a daemon without a blob store)
    give_back = GiveBack()  # after a request of many jobs, or a long log streamed

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

    def mine(who: Principal, specs: list[JobSpec]) -> list[JobSpec]:
        return owned(who, specs, services.run_as, services.identities.run_as)

    def hidden(request: Request, job_id: str) -> NotFound:
        request.scope[DENIED] = f"job {job_id} belongs to another tenant"
        return NotFound(f"no such job: {job_id}")

    async def guard(request: Request, who: Principal, job_id: str) -> None:
        """Refuse a job of another tenant as if it did not exist."""
        if who.admin:
            return
        owner = await store.read(lambda c: st.tenants_of(c, [job_id]))
        if job_id in owner and owner[job_id] != who.tenant:
            raise hidden(request, job_id)

    async def visible_ids(request: Request, who: Principal, ids: list[str]) -> tuple[list[str], list[dict[str, str]]]:
        if who.admin or not ids:
            return ids, []
        owner = await store.read(lambda c: st.tenants_of(c, ids))
        foreign = [i for i in ids if i in owner and owner[i] != who.tenant]
        for job_id in foreign:
            hidden(request, job_id)
        errors = [{"id": i, **NotFound(f"no such job: {i}").to_body()["error"]} for i in foreign]
        return [i for i in ids if i not in set(foreign)], errors

    async def job_or_404(request: Request, who: Principal, job_id: str) -> JobView:
        view = await store.read(lambda c: st.get_job(c, job_id))
        if not who.sees(view.tenant):
            raise hidden(request, job_id)
        return view

    @app.post("/v1/jobs", status_code=201, response_model=JobView)
    async def submit(request: Request, spec: JobSpec, key: str | None = IDEMPOTENCY_KEY) -> Response:
        who = caller(request)  # not a Depends: on the hottest route its resolution is a measurable cost
        specs = mine(who, [spec])
        if spec.package is not None:
            await refuse_missing(packages, specs, batch=False)
        views, new = await scheduler.submit(specs, key=key, local=who.via == "unix")
        request.scope[TARGET] = views[0].id
        return _json(views[0], 201 if new else 200)

    @app.post("/v1/jobs/batch", status_code=201, response_model=JobRefList)
    async def submit_batch(request: Request, batch: BatchSubmit, key: str | None = IDEMPOTENCY_KEY,
                           who: Principal = WHO) -> Response:
        specs = mine(who, batch.jobs)
        await refuse_missing(packages, specs, batch=True)
        refs, new = await scheduler.submit(specs, views=False, batch=True, key=key,
                                                  local=who.via == "unix")
        give_back.after(len(refs))
        request.scope[TARGET] = f"{len(refs)} jobs: {refs[0]['id']}..{refs[-1]['id']}"
        return Response(json.dumps({"jobs": refs}), status_code=201 if new else 200, media_type="application/json")

    @app.get("/v1/jobs", response_model=JobList)
    async def list_jobs(status: list[JobStatus] | None = Query(None), name: str | None = None,
                        tenant: str | None = None, since: datetime | None = None, until: datetime | None = None,
                        array: str | None = Query(None, max_length=20, description="the tasks of this array"),
                        arrays: bool = Query(False, description="only array jobs"),
                        limit: int = Query(100, ge=1, le=100_000), cursor: str | None = None,
                        sort: str | None = Query(None, description="a column: " + ", ".join(SORTS)),
                        desc: bool = False, who: Principal = WHO) -> JobList:
        check_sort(sort)
        flt = scoped(who, JobFilter(status=status or [], name=name, tenant=tenant, since=since, until=until,
                                    array=array, arrays=arrays))
        if flt is None:
            return JobList(jobs=[], next_cursor=None)
        jobs, nxt = await store.read(lambda c: st.list_jobs(c, flt, limit, cursor, sort=sort, desc=desc))
        scheduler.explain(jobs)
        return JobList(jobs=jobs, next_cursor=nxt)

    async def bulk(request: Request, who: Principal, req: BatchCancel, action: str) -> BulkResult:
        ids, errors = await visible_ids(request, who, req.ids)
        flt = scoped(who, req.filter)
        if not ids and (flt is None or req.ids):
            return BulkResult(errors=errors)
        options = req.model_dump(exclude={"ids", "filter"})  # dry_run, and what the action's shape adds
        result = await getattr(scheduler, action)(ids, flt, **options)
        result.errors.extend(errors)
        give_back.after(len(result.affected) + len(result.cascaded))
        return result

    def bulk_route(action: str, shape: type[BatchCancel]) -> None:
        """POST /v1/jobs/ACTION: ids or a filter -> BulkResult (cancel, retry, hold, release)."""
        async def route(request: Request, req: BatchCancel, who: Principal = WHO) -> BulkResult:
            return await bulk(request, who, req, action)

        route.__annotations__["req"] = shape  # the body FastAPI validates: the class itself, not its name
        route.__name__ = f"{action}_many"  # the audit's action
        app.post(f"/v1/jobs/{action}", response_model=BulkResult, name=f"{action}_many")(route)

    for action, shape in (("cancel", BatchCancel), ("retry", BatchRetry), ("hold", BatchCancel),
                          ("release", BatchCancel)):
        bulk_route(action, shape)

    @app.get("/v1/jobs/{job_id}", response_model=JobView)
    async def get_job(request: Request, job_id: str, who: Principal = WHO) -> JobView:
        view = await job_or_404(request, who, job_id)
        scheduler.explain([view])
        return view

    @app.get("/v1/jobs/{job_id}/result", response_model=JobResult)
    async def get_result(request: Request, job_id: str, who: Principal = WHO) -> JobResult:
        await guard(request, who, job_id)
        status, raw = await store.read(lambda c: st.get_result(c, job_id))
        return JobResult(id=job_id, status=status, result=await services.results.load(job_id, raw))

    @app.get("/v1/jobs/{job_id}/events", response_model=list[JobEventView])
    async def get_events(request: Request, job_id: str, who: Principal = WHO) -> list[JobEventView]:
        await guard(request, who, job_id)
        return await store.read(lambda c: st.job_events(c, job_id))

    @app.get("/v1/jobs/{job_id}/wait", response_model=JobView)
    async def wait(request: Request, job_id: str, timeout: float = Query(30, ge=0, le=300),
                   who: Principal = WHO) -> JobView:
        await guard(request, who, job_id)
        return await scheduler.wait(job_id, timeout)

    @app.get("/v1/jobs/{job_id}/logs")
    async def logs(request: Request, job_id: str, follow: bool = False, tail: int | None = Query(None, ge=0),
                   attempt: int | None = Query(None, ge=1, description="only this attempt's lines"),
                   who: Principal = WHO) -> StreamingResponse:
        await job_or_404(request, who, job_id)

        async def done() -> bool:
            status = await store.read(lambda c: st.current_status(c, job_id))
            return status is None or is_terminal(status)

        async def body() -> AsyncIterator[bytes]:
            # The log file holds these very NDJSON lines: blocks of it go out as they are.
            if follow:
                async for block in services.logs.follow(job_id, done, tail, attempt=attempt):
                    yield block
            else:
                await asyncio.to_thread(services.logs.sync, job_id)  # the shared store's blocks, if any
                for block in services.logs.blocks(job_id, tail, attempt):
                    yield block

        return StreamingResponse(give_back.streamed(body()), media_type="application/x-ndjson")

    @app.get("/v1/events")
    async def events(after: int | None = Query(None, ge=0, description="resume after this seq (default: now)"),
                     follow: bool = True, who: Principal = WHO) -> StreamingResponse:
        """Jobs' changes of state as NDJSON `JobChange` lines, in commit order; the caller's
        tenant only (admins: all)."""
        lines = services.events.follow(after, visible_to(who.tenant, who.admin), follow)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    async def one(request: Request, who: Principal, action: str, job_id: str) -> JobView:
        await guard(request, who, job_id)
        result = await getattr(scheduler, action)([job_id])
        if result.errors:
            raise from_body(result.errors[0])
        return await job_or_404(request, who, job_id)

    def one_route(action: str) -> None:
        """POST /v1/jobs/ID/ACTION: that job afterwards, or the one error."""
        async def route(request: Request, job_id: str, who: Principal = WHO) -> JobView:
            return await one(request, who, action, job_id)

        route.__name__ = action  # the audit's action

        app.post(f"/v1/jobs/{{job_id}}/{action}", response_model=JobView, name=action)(route)

    for action in ("cancel", "retry", "hold", "release"):
        one_route(action)

    @app.patch("/v1/jobs/{job_id}", response_model=JobView)
    async def update(request: Request, job_id: str, req: JobUpdate, who: Principal = WHO) -> JobView:
        await guard(request, who, job_id)
        return await scheduler.update(job_id, req)

    @app.post("/v1/jobs/{job_id}/priority", response_model=JobView)
    async def set_priority(request: Request, job_id: str, req: PriorityChange, who: Principal = WHO) -> JobView:
        await guard(request, who, job_id)
        return await scheduler.set_priority(job_id, req.priority)

    @app.get("/v1/jobs/{job_id}/graph", response_model=GraphView)
    async def graph(request: Request, job_id: str, who: Principal = WHO) -> GraphView:
        await guard(request, who, job_id)
        return await scheduler.graph(job_id)

    @app.get("/v1/stats", response_model=Stats)
    async def stats(who: Principal = WHO) -> Stats:
        scope = {"tenant": who.tenant, "scoped": not who.admin}
        counts, failed_hour = await store.read(lambda c: (counts_by_status(c, **scope),
                                                          failed_since(c, time.time() - 3600, **scope)))
        total = sum(counts.values())
        active = sum(n for s, n in counts.items() if not is_terminal(s))
        by_status = {s.value: counts.get(s.value, 0) for s in JobStatus}
        sched = scheduler
        return Stats(total_jobs=total, active_jobs=active, by_status=by_status,
                     queue_depth=sched.queue_depth(None if who.admin else who.tenant),
                     running_jobs=counts.get("RUNNING", 0), max_jobs=services.cfg.jobmanager.max_jobs,
                     waiting_jobs=len(sched.state.waiting.blockers) if who.admin else 0,
                     retrying_jobs=len(sched.state.later) if who.admin else 0, failed_last_hour=failed_hour,
                     scheduled_jobs=sched.counters.decisions,
                     scheduler_seconds=round(sched.counters.decision_seconds, 6))

    @app.get("/v1/health", response_model=Health)
    async def health() -> Health:
        try:
            latency = await store.read(lambda _c: store.ping())
            db = {"ok": True, "url": redact_url(store.url), "latency_ms": round(latency, 2)}
        except SageOpsError as exc:
            db = {"ok": False, "url": redact_url(store.url), "detail": exc.message}
        ray = services.ray.health()
        lead = services.leadership
        logs = services.logs
        storage = {"url": logs.remote.url if logs.remote else str(services.cfg.storage.path),
                   "shared": logs.remote is not None, "waiting_logs": logs.backlog(), "error": logs.last_error}
        ok = db["ok"] and not logs.last_error and (not lead.is_leader or (ray.connected and scheduler.state.ready))
        return Health(status="ok" if ok else "degraded", version=__version__, pid=os.getpid(),
                      uptime_s=round(time.time() - services.listening.started_at, 3),
                      socket=str(services.listening.socket), tcp=services.listening.tcp, database=db,
                      storage=storage, ray=ray,
                      role=lead.role,
                      leader=lead.describe()["leader"], containment=containment_mode(),
                      identity=services.run_as.describe())

    app.include_router(admin_routes(services, caller))
    app.include_router(cluster_routes(services, caller))
    if packages is not None:
        app.include_router(package_routes(packages, caller))
    return app

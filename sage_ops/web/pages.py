"""The dashboard's pages: login, jobs (live, filtered and sorted by the URL, paged), a job (its
record, history and live log), nodes and pools. Each handler asks the API as the visitor (api.py)
and renders a template; actions are forms carrying the session's CSRF secret."""

from __future__ import annotations

import functools
import json
import logging
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .api import Api, ApiError
from .charts import WINDOWS, dashboard_charts
from .graph import draw
from .session import COOKIE, LIFETIME, Session, Sessions, csrf_ok

log = logging.getLogger(__name__)
STATUSES = ["SUBMITTED", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "REJECTED"]
JOB_ACTIONS = ("cancel", "retry", "hold", "release")
PAGE = 50
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
           "x-frame-options": "DENY"}


Page = Callable[..., Awaitable[Response]]


def logged_in(stream: bool = False) -> Callable[[Page], Page]:
    """A page for a visitor with a session (its handler gets it); anyone else is sent to the login
    form, or, for a stream the page's script opens, told 401."""
    def wrap(handler: Page) -> Page:
        @functools.wraps(handler)
        async def page(self: Dashboard, request: Request) -> Response:
            session = self._session(request)
            if session is None:
                return PlainTextResponse("log in first", 401) if stream else self._to_login(request)
            return await handler(self, request, session)
        return page
    return wrap


def acts(handler: Page) -> Page:
    """A form that acts: from a visitor with a session, carrying that session's CSRF secret (a page
    of another site cannot read it); its handler gets the session and the form."""
    @functools.wraps(handler)
    async def page(self: Dashboard, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return self._to_login(request)
        form = await request.form()
        if not csrf_ok(session, _str(form.get("csrf"))):
            return _csrf_refused()
        return await handler(self, request, session, form)
    return page


def _csrf_refused() -> Response:
    return PlainTextResponse("refused: the form's CSRF token does not match this session", 403)


class Dashboard:
    def __init__(self, api: Api, key: bytes, secure: bool,
                 redeem: Callable[[str], Awaitable[str | None]] | None = None) -> None:
        """`api`: how the pages reach the API; `key`: seals the session cookies; `secure`: served
        over TLS (cookies marked Secure); `redeem`: a one-time login code -> a token for the
        visitor (None: it is spent, expired or unknown), where login links are made."""
        self.api = api
        self.sessions = Sessions(key)
        self.secure = secure
        self.redeem = redeem
        self.templates = Environment(loader=PackageLoader("sage_ops.web", "templates"),
                                     autoescape=select_autoescape(["html"]))
        routes = [
            Route("/", self.home),
            Route("/favicon.ico", self.favicon),
            Route("/web/login", self.login_form, methods=["GET"]),
            Route("/web/login", self.login, methods=["POST"]),
            Route("/web/logout", self.logout, methods=["POST"]),
            Route("/web/jobs", self.jobs, methods=["GET"]),
            Route("/web/jobs", self.bulk, methods=["POST"]),
            Route("/web/jobs/{job_id}", self.job, methods=["GET"]),
            Route("/web/jobs/{job_id}/log", self.log_stream, methods=["GET"]),
            Route("/web/jobs/{job_id}/graph", self.graph, methods=["GET"]),
            Route("/web/jobs/{job_id}/log.txt", self.log_download, methods=["GET"]),
            Route("/web/jobs/{job_id}/{action}", self.act, methods=["POST"]),
            Route("/web/events", self.events, methods=["GET"]),
            Route("/web/nodes", self.nodes, methods=["GET"]),
            Route("/web/charts", self.charts, methods=["GET"]),
            Route("/web/tenants", self.tenants, methods=["GET"]),
            Route("/web/audit", self.audit, methods=["GET"]),
            Route("/web/submit", self.submit_form, methods=["GET"]),
            Route("/web/submit", self.submit, methods=["POST"]),
            Mount("/web/static", StaticFiles(directory=str(files("sage_ops.web") / "static")), name="static"),
        ]
        self.app = Starlette(routes=routes, exception_handlers={Exception: self._bug})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *((k.encode(), v.encode()) for k, v in HEADERS.items())]
            await send(message)

        await self.app(scope, receive, with_headers)

    async def _bug(self, request: Request, exc: Exception) -> Response:
        log.exception("dashboard page %s failed", request.url.path)
        return PlainTextResponse(f"internal error ({exc.__class__.__name__}); see the daemon log", 500)

    # -- helpers --------------------------------------------------------------------------------
    def _session(self, request: Request) -> Session | None:
        return self.sessions.open(request.cookies.get(COOKIE))

    @staticmethod
    def _peer(request: Request) -> tuple[str, int]:
        return (request.client.host, request.client.port) if request.client else ("127.0.0.1", 0)

    async def _ask(self, request: Request, session: Session, method: str, path: str, query: Any = None,
                   body: Any = None) -> Any:
        return await self.api.call(method, path, session.token, self._peer(request), query, body)

    def _render(self, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(**ctx)
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def _to_login(self, request: Request, why: str | None = None) -> Response:
        query = {"next": request.url.path + (f"?{request.url.query}" if request.url.query else "")}
        if why:
            query["why"] = why
        out = RedirectResponse(f"/web/login?{urlencode(query)}", status_code=303)
        out.delete_cookie(COOKIE, path="/")
        return out

    async def _page(self, request: Request, template: str, session: Session, status: int = 200,
                    **ctx: Any) -> HTMLResponse:
        who = await self._ask(request, session, "GET", "/v1/whoami")
        return self._render(template, status, who=who, csrf=session.csrf, path=request.url.path, **ctx)

    # -- login ----------------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        return RedirectResponse("/web/jobs", status_code=303)

    async def favicon(self, request: Request) -> Response:
        return RedirectResponse("/web/static/favicon.svg", status_code=301)

    async def login_form(self, request: Request) -> Response:
        code = request.query_params.get("code")
        if code and self.redeem is not None:
            try:
                token = await self.redeem(code)
            except ApiError as exc:
                return self._render("login.html", status=exc.status, why=exc.message, next="/web/jobs")
            if token is not None:
                return self._logged_in(token, "/web/jobs")
            return self._render("login.html", status=401, why="this login link was used already or has expired: "
                                "run `sage-ops web` again, or log in with a token", next="/web/jobs")
        return self._render("login.html", why=request.query_params.get("why"),
                            next=_local(request.query_params.get("next")))

    def _logged_in(self, token: str, nxt: str) -> Response:
        value, _ = self.sessions.new(token)
        out = RedirectResponse(nxt, status_code=303)
        out.set_cookie(COOKIE, value, max_age=int(LIFETIME), path="/", httponly=True, secure=self.secure,
                       samesite="strict")
        return out

    async def login(self, request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token") or "").strip()
        nxt = _local(str(form.get("next") or ""))
        try:
            await self.api.call("GET", "/v1/whoami", token, self._peer(request))
        except ApiError as exc:
            return self._render("login.html", status=401, why=exc.message, next=nxt)
        return self._logged_in(token, nxt)

    async def logout(self, request: Request) -> Response:
        session = self._session(request)
        form = await request.form()
        if session is not None and not csrf_ok(session, _str(form.get("csrf"))):
            return _csrf_refused()
        out = RedirectResponse("/web/login", status_code=303)
        out.delete_cookie(COOKIE, path="/")
        return out

    # -- jobs -----------------------------------------------------------------------------------
    @logged_in()
    async def jobs(self, request: Request, session: Session) -> Response:
        q = request.query_params
        status = [s for s in q.getlist("status") if s in STATUSES]
        query: dict[str, Any] = {"limit": PAGE, "status": status}
        for key in ("name", "cursor", "sort", "array", "tenant"):
            if q.get(key):
                query[key] = q[key]
        if q.get("desc") == "1":
            query["desc"] = "true"
        try:
            listed = await self._ask(request, session, "GET", "/v1/jobs", query)
        except ApiError as exc:
            if exc.status == 401:
                return self._to_login(request, exc.message)
            listed, query["error"] = {"jobs": [], "next_cursor": None}, exc.message
        ctx = {"jobs": listed["jobs"], "next_cursor": listed.get("next_cursor"), "statuses": STATUSES,
               "chosen": status, "name": q.get("name", ""), "sort": q.get("sort", ""), "desc": q.get("desc") == "1",
               "error": query.get("error"), "flash": q.get("flash"), "query": _keep(q, "cursor"),
               "array": q.get("array")}
        if q.get("partial") == "rows":
            return self._render("job_rows.html", **ctx)
        return await self._page(request, "jobs.html", session, **ctx)

    @acts
    async def bulk(self, request: Request, session: Session, form: Any) -> Response:
        action, ids = _str(form.get("action")), [str(i) for i in form.getlist("ids")]
        back = _local(_str(form.get("back")) or "/web/jobs")
        if action not in ("cancel", "retry", "priority") or not ids:
            return RedirectResponse(_with(back, flash="choose jobs and an action"), status_code=303)
        if action == "priority":
            return RedirectResponse(_with(back, flash=await self._priorities(request, session, ids,
                                                                             form.get("priority"))), status_code=303)
        try:
            result = await self._ask(request, session, "POST", f"/v1/jobs/{action}", body={"ids": ids})
            changed = len(result.get("affected") or [])
            errors = result.get("errors") or []
            flash = f"{action}: {changed} job(s)" + (f"; {errors[0]['message']}" if errors else "")
        except ApiError as exc:
            flash = f"{action} refused: {exc.message}"
        return RedirectResponse(_with(back, flash=flash), status_code=303)

    async def _priorities(self, request: Request, session: Session, ids: list[str], given: Any) -> str:
        """Each selected job's priority set (the API has it per job); what happened, in words."""
        try:
            priority = _int(given)
        except ValueError:
            return "priority: give a whole number"
        refused: list[str] = []
        for job_id in ids:
            try:
                await self._ask(request, session, "POST", f"/v1/jobs/{job_id}/priority", body={"priority": priority})
            except ApiError as exc:
                refused.append(f"{job_id}: {exc.message}")
        done = f"priority {priority}: {len(ids) - len(refused)} job(s)"
        return done + (f"; refused {refused[0]}" + (f" and {len(refused) - 1} more" if len(refused) > 1 else "")
                       if refused else "")

    @logged_in()
    async def job(self, request: Request, session: Session) -> Response:
        job_id = request.path_params["job_id"]
        try:
            job = await self._ask(request, session, "GET", f"/v1/jobs/{job_id}")
            history = await self._ask(request, session, "GET", f"/v1/jobs/{job_id}/events")
            result = (await self._ask(request, session, "GET", f"/v1/jobs/{job_id}/result")).get("result")
        except ApiError as exc:
            if exc.status == 401:
                return self._to_login(request, exc.message)
            return await self._page(request, "missing.html", session, exc.status, message=exc.message)
        return await self._page(request, "job.html", session, job=job, history=history, actions=JOB_ACTIONS,
                                result=None if result is None else json.dumps(result, indent=2, sort_keys=True),
                                flash=request.query_params.get("flash"),
                                spec=json.dumps(_given(job.get("spec") or {}), indent=2, sort_keys=True))

    @logged_in()
    async def graph(self, request: Request, session: Session) -> Response:
        job_id = request.path_params["job_id"]
        try:
            graph = await self._ask(request, session, "GET", f"/v1/jobs/{job_id}/graph")
        except ApiError as exc:
            if exc.status == 401:
                return self._to_login(request, exc.message)
            return await self._page(request, "missing.html", session, exc.status, message=exc.message)
        metrics = {m["id"]: m for m in (graph.get("pipeline") or {}).get("metrics", [])}
        return await self._page(request, "graph.html", session, graph=graph, drawing=draw(graph["nodes"]),
                                metrics=metrics)

    @acts
    async def act(self, request: Request, session: Session, form: Any) -> Response:
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        if action not in (*JOB_ACTIONS, "priority"):
            return PlainTextResponse(f"no such action: {action}", 404)
        try:
            if action == "priority":
                try:
                    body = {"priority": _int(form.get("priority"))}
                except ValueError:
                    return RedirectResponse(_with(f"/web/jobs/{job_id}", flash="priority: give a whole number"),
                                            status_code=303)
                await self._ask(request, session, "POST", f"/v1/jobs/{job_id}/priority", body=body)
                flash = f"priority: set to {body['priority']}"
            else:
                await self._ask(request, session, "POST", f"/v1/jobs/{job_id}/{action}")
                flash = f"{action}: done"
        except ApiError as exc:
            flash = f"{action} refused: {exc.message}"
        return RedirectResponse(_with(f"/web/jobs/{job_id}", flash=flash), status_code=303)

    @logged_in()
    async def log_download(self, request: Request, session: Session) -> Response:
        job_id = request.path_params["job_id"]
        status, chunks = await self.api.stream("GET", f"/v1/jobs/{job_id}/logs", session.token, self._peer(request))
        if status >= 400:
            return PlainTextResponse((b"".join([c async for c in chunks])).decode(errors="replace"), status)
        return StreamingResponse(_text_lines(chunks), media_type="text/plain; charset=utf-8",
                                 headers={"content-disposition": f'attachment; filename="{job_id}.log"'})

    @logged_in(stream=True)
    async def log_stream(self, request: Request, session: Session) -> Response:
        """The job's log lines as server-sent events, from `tail` lines back, live."""
        job_id = request.path_params["job_id"]
        query = {"follow": "true", "tail": request.query_params.get("tail", "500")}
        status, chunks = await self.api.stream("GET", f"/v1/jobs/{job_id}/logs", session.token, self._peer(request),
                                               query)
        if status >= 400:
            return PlainTextResponse("not found", status)
        return StreamingResponse(_sse(chunks, "line"), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    @logged_in(stream=True)
    async def events(self, request: Request, session: Session) -> Response:
        """Jobs' changes of state the visitor may see, as server-sent events (the page coalesces)."""
        status, chunks = await self.api.stream("GET", "/v1/events", session.token, self._peer(request),
                                               {"follow": "true"})
        if status >= 400:
            return PlainTextResponse("refused", status)
        return StreamingResponse(_sse(chunks, "job"), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    # -- charts ---------------------------------------------------------------------------------
    @logged_in()
    async def charts(self, request: Request, session: Session) -> Response:
        window = request.query_params.get("window", "1h")
        window = window if window in WINDOWS else "1h"
        try:
            series = await self._ask(request, session, "GET", "/v1/metrics/series", {"window": WINDOWS[window]})
        except ApiError as exc:
            if exc.status == 401:
                return self._to_login(request, exc.message)
            series = {"points": [], "step_s": 0}
        return await self._page(request, "charts.html", session, charts=dashboard_charts(series["points"]),
                                window=window, windows=list(WINDOWS), step=series["step_s"])

    # -- admins: tenants and the audit (the API says 403 to anyone else) ----------------------------
    async def _listing(self, request: Request, session: Session, template: str, path: str, query: Any = None,
                       key: str | None = None, **ctx: Any) -> Response:
        try:
            answer = await self._ask(request, session, "GET", path, query)
            rows, error = (answer[key] if key else answer), None
        except ApiError as exc:
            if exc.status == 401:
                return self._to_login(request, exc.message)
            rows, error = [], exc.message
        return await self._page(request, template, session, 200 if error is None else 403, error=error,
                                **{ctx.pop("rows_as"): rows}, **ctx)

    @logged_in()
    async def tenants(self, request: Request, session: Session) -> Response:
        return await self._listing(request, session, "tenants.html", "/v1/tenants", rows_as="tenants")

    @logged_in()
    async def audit(self, request: Request, session: Session) -> Response:
        q = request.query_params
        query = {"limit": 500, **{k: q[k] for k in ("actor", "action") if q.get(k)}}
        return await self._listing(request, session, "audit.html", "/v1/audit", query, key="events", rows_as="events",
                                   actor=q.get("actor", ""), action=q.get("action", ""))

    # -- submit ---------------------------------------------------------------------------------
    @logged_in()
    async def submit_form(self, request: Request, session: Session) -> Response:
        return await self._page(request, "submit.html", session, form={})

    @acts
    async def submit(self, request: Request, session: Session, form: Any) -> Response:
        given = {k: _str(form.get(k)) or "" for k in ("command", "name", "cpu", "gpu", "priority", "retries")}
        try:
            argv = shlex.split(given["command"])
            spec: dict[str, Any] = {"kind": "command", "command": argv, "priority": _int(given["priority"]),
                                    "resources": {"cpu": float(given["cpu"] or 1), "gpu": float(given["gpu"] or 0)},
                                    "retry_policy": {"max_retries": _int(given["retries"])}}
        except ValueError as exc:
            return await self._page(request, "submit.html", session, 400, form=given, error=f"command: {exc}")
        if given["name"]:
            spec["name"] = given["name"]
        try:
            job = await self._ask(request, session, "POST", "/v1/jobs", body=spec)
        except ApiError as exc:
            return await self._page(request, "submit.html", session, exc.status, form=given, error=exc.message)
        return RedirectResponse(_with(f"/web/jobs/{job['id']}", flash=f"submitted: {job['status']}"), status_code=303)

    # -- nodes ----------------------------------------------------------------------------------
    @logged_in()
    async def nodes(self, request: Request, session: Session) -> Response:
        try:
            nodes = await self._ask(request, session, "GET", "/v1/nodes")
            pools = await self._ask(request, session, "GET", "/v1/pools")
        except ApiError as exc:
            if exc.status == 401:
                return self._to_login(request, exc.message)
            nodes, pools = [], []
        return await self._page(request, "nodes.html", session, nodes=nodes, pools=pools)


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    rest = b""
    async for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        for line in whole:
            if line.strip():
                yield line
    if rest.strip():
        yield rest


async def _sse(chunks: AsyncIterator[bytes], event: str) -> AsyncIterator[bytes]:
    yield b": connected\n\n"
    async for line in _lines(chunks):
        yield b"event: " + event.encode() + b"\ndata: " + line + b"\n\n"


async def _text_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for line in _lines(chunks):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        text = entry.get("message", "") if isinstance(entry, dict) else str(entry)
        yield (str(text).rstrip("\n") + "\n").encode()


def _given(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec less its empty fields: what the submitter said."""
    return {k: v for k, v in spec.items() if v not in (None, [], {}, False, "")}


def _int(value: Any) -> int:
    """A form's whole number (empty: 0); ValueError says it is not one."""
    text = value.strip() if isinstance(value, str) else ""
    return int(text) if text else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _local(path: str | None) -> str:
    """A path of this site to go to after login (never another site's address)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/web/jobs"
    return path


def _with(path: str, **params: str) -> str:
    base, _, query = path.partition("?")
    kept = [p for p in query.split("&") if p and not any(p.startswith(k + "=") for k in params)]
    return base + "?" + "&".join([*kept, urlencode(params)])


def _keep(q: Any, *drop: str) -> str:
    """The page's filters and sort as a query string, less `drop` (for links that change one)."""
    return urlencode([(k, v) for k, v in q.multi_items() if k not in (*drop, "partial", "flash")])

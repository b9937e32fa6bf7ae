"""What a listener serves: the dashboard's pages (`/` and `/web/...`, which log in with a token
and call the API as their visitor) beside the API behind its Gate (everything else)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class Site:
    def __init__(self, api: ASGIApp, dashboard: ASGIApp) -> None:
        self.api, self.dashboard = api, dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path in ("/", "/web", "/favicon.ico") or path.startswith("/web/")):
            await self.dashboard(scope, receive, send)
        else:
            await self.api(scope, receive, send)

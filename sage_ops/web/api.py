"""The API, called as the visitor, with the visitor's bearer token: in the daemon, an ASGI request
to its gated API app (with the visitor's address; no Unix-socket credentials, so only the token
counts); in `sage-ops web`, an HTTP request to the daemon's socket or address, where a request
with a token is that token's whoever sends it. Responses may stream (events, logs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.types import ASGIApp


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Api:
    """How the pages reach the API; `stream` is the transport, `call` reads a JSON answer."""

    async def stream(self, method: str, path: str, token: str | None, peer: tuple[str, int], query: Any = None,
                     body: Any = None) -> tuple[int, AsyncIterator[bytes]]:
        raise NotImplementedError

    async def call(self, method: str, path: str, token: str | None, peer: tuple[str, int], query: Any = None,
                   body: Any = None) -> Any:
        """The JSON answer, or ApiError with the API's own message."""
        status, chunks = await self.stream(method, path, token, peer, query, body)
        data = b"".join([c async for c in chunks])
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        if status >= 400:
            error = (parsed or {}).get("error", {}) if isinstance(parsed, dict) else {}
            raise ApiError(status, error.get("message") or f"HTTP {status}")
        return parsed


class InProcess(Api):
    """The daemon's own API app, called without leaving the process."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def _scope(self, method: str, path: str, token: str | None, peer: tuple[str, int], query: Any,
               body: bytes) -> dict:
        headers = [(b"authorization", f"Bearer {token}".encode()), (b"host", b"dashboard")]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                "query_string": urlencode(query or {}, doseq=True).encode(), "headers": headers,
                "client": peer, "server": ("dashboard", 80)}

    async def stream(self, method: str, path: str, token: str | None, peer: tuple[str, int], query: Any = None,
                     body: Any = None) -> tuple[int, AsyncIterator[bytes]]:
        """The status, and the body as it comes."""
        raw = json.dumps(body).encode() if body is not None else b""
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        sent = False
        disconnected = asyncio.Event()

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start" and not started.done():
                started.set_result(message["status"])
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    await chunks.put(message["body"])
                if not message.get("more_body"):
                    await chunks.put(None)

        async def run() -> None:
            try:
                await self.app(self._scope(method, path, token, peer, query, raw), receive, send)
            finally:
                await chunks.put(None)
                if not started.done():
                    started.set_result(500)

        task = asyncio.create_task(run())
        status = await started

        async def body_chunks() -> AsyncIterator[bytes]:
            try:
                while (chunk := await chunks.get()) is not None:
                    yield chunk
            finally:
                disconnected.set()
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

        return status, body_chunks()


class OverHttp(Api):
    """The daemon at `address` (unix:///path, http://host:port, https://host:port), for a
    dashboard served by another process (`sage-ops web`). Without a token, the request is this
    process's own (its Unix-socket credentials): used only to mint the login link's token."""

    def __init__(self, address: str, verify: Any = True) -> None:
        if address.startswith("unix://"):
            transport = httpx.AsyncHTTPTransport(uds=address.removeprefix("unix://"))
            self.client = httpx.AsyncClient(transport=transport, base_url="http://sage-ops", timeout=None)
        else:
            base = "http://" + address.removeprefix("tcp://") if address.startswith("tcp://") else address
            self.client = httpx.AsyncClient(base_url=base, timeout=None, verify=verify)

    async def stream(self, method: str, path: str, token: str | None, peer: tuple[str, int], query: Any = None,
                     body: Any = None) -> tuple[int, AsyncIterator[bytes]]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        request = self.client.build_request(method, path, params=query, json=body, headers=headers)
        response = await self.client.send(request, stream=True)

        async def body_chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return response.status_code, body_chunks()

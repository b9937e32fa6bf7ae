"""Sync and async clients over the daemon's HTTP API (Unix socket or TCP), with failover.

Each API method is written once (client_api.py): it builds a `Call`, and the sync client runs
it at once while the async client returns a coroutine. Only the transport differs, and it is
what this module holds: each client's way to run a call, upload a package, stream and wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import httpx

from .client_api import _Api, script_spec
from .cluster import NodeProgress
from .errors import NotFound
from .transport import (
    LOG_TIMEOUT,
    Call,
    ClientConfig,
    SyncTransport,
    Transport,
    not_leader,
    parse_addresses,
    raise_for,
)
from .views import JobChange, JobView, LogEntry
from .workdir import UPLOAD_HEADERS, UPLOAD_TIMEOUT, Packed, probe_path, upload

__all__ = ["AsyncJobManagerClient", "ClientConfig", "JobManagerClient", "parse_addresses", "script_spec"]

T = TypeVar("T")


def _same(body: Any) -> Any:
    return body


def _event_params(after: int | None, follow: bool) -> dict[str, Any]:
    return {"follow": str(follow).lower(), **({"after": after} if after is not None else {})}


class JobManagerClient(SyncTransport, _Api):
    """`JobManagerClient("localhost:19001")` or `JobManagerClient("unix:///run/sage-ops.sock")`."""

    def __init__(self, address: str | None = None, config: dict[str, Any] | ClientConfig | None = None,
                 token: str | None = None) -> None:
        SyncTransport.__init__(self, address, config, token)

    def _upload_then(self, packs: list[Packed], call: Call[T]) -> T:
        """The packages the daemon lacks (workdir.upload asks first), then the submit."""
        upload(lambda method, path, **kw: self._run(Call(method, path, _same, **kw)), packs)
        return self._run(call)

    def stream_job_logs(self, job_id: str, follow: bool = True, tail: int | None = None,
                        attempt: int | None = None) -> Iterator[LogEntry]:
        """Log entries (.timestamp, .message, .attempt) as they come; ends when the job ends."""
        return self._stream(f"/v1/jobs/{job_id}/logs", self._logs_params(follow, tail, attempt),
                            LogEntry.model_validate_json)

    def node_progress(self, name: str) -> Iterator[NodeProgress]:
        """The steps of a node's add or drain as they happen; the last line has step "end"."""
        return self._stream(f"/v1/nodes/{name}/progress", {}, NodeProgress.model_validate_json)

    def stream_events(self, after: int | None = None, follow: bool = True) -> Iterator[JobChange]:
        """Jobs' changes of state in commit order (JobChange); resume with after=<last seq>."""
        return self._stream("/v1/events", _event_params(after, follow), JobChange.model_validate_json)

    def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """Block until the job is terminal (or `timeout` seconds pass); returns its view."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.wait_once(job_id, self._wait_slice(deadline))
            if self._wait_over(view, deadline):
                return view

    def __enter__(self) -> JobManagerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncJobManagerClient(Transport, _Api):
    """The same methods as coroutines."""

    def __init__(self, address: str | None = None, config: dict[str, Any] | ClientConfig | None = None,
                 token: str | None = None) -> None:
        Transport.__init__(self, address, config, token)
        self._clients: dict[int, httpx.AsyncClient] = {}

    def _client(self, i: int) -> httpx.AsyncClient:
        if i not in self._clients:
            self._clients[i] = httpx.AsyncClient(**self._client_kwargs(i, httpx.AsyncHTTPTransport))
        return self._clients[i]

    async def _run(self, call: Call[T]) -> T:  # type: ignore[override]
        last: Exception | None = None
        for attempt in self._rounds():
            for i in self._order():
                try:
                    resp = await self._client(i).request(call.method, call.path, params=call.params, json=call.json,
                                                         content=call.content, headers=call.headers,
                                                         timeout=call.timeout or self.config.timeout)
                except httpx.TransportError as exc:
                    last = self._failed(exc, call)
                    continue
                if not_leader(resp):
                    last = self._standby(resp)
                    continue
                return self._done(i, resp, call)
            await asyncio.sleep(self._backoff(attempt))
        raise self._gave_up(last)

    async def _upload_then(self, packs: list[Packed], call: Call[T]) -> T:  # type: ignore[override]
        """As the sync client's, each request awaited in turn."""
        for packed in packs:
            try:
                await self._run(Call("GET", probe_path(packed), _same))
            except NotFound:
                await self._run(Call("PUT", probe_path(packed), _same, content=packed.data, headers=UPLOAD_HEADERS,
                                     timeout=UPLOAD_TIMEOUT))
        return await self._run(call)

    def stream_job_logs(self, job_id: str, follow: bool = True, tail: int | None = None,
                        attempt: int | None = None) -> AsyncIterator[LogEntry]:
        return self._stream(f"/v1/jobs/{job_id}/logs", self._logs_params(follow, tail, attempt),
                            LogEntry.model_validate_json)

    def node_progress(self, name: str) -> AsyncIterator[NodeProgress]:
        return self._stream(f"/v1/nodes/{name}/progress", {}, NodeProgress.model_validate_json)

    def stream_events(self, after: int | None = None, follow: bool = True) -> AsyncIterator[JobChange]:
        return self._stream("/v1/events", _event_params(after, follow), JobChange.model_validate_json)

    async def _stream(self, path: str, params: dict[str, Any], parse: Callable[[str], T]) -> AsyncIterator[T]:
        last: Exception | None = None
        for i in self._order():
            try:
                async with self._client(i).stream("GET", path, params=params, timeout=LOG_TIMEOUT) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                    raise_for(resp)
                    async for line in resp.aiter_lines():
                        if line.strip():
                            yield parse(line)
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc
        raise self._unavailable(last)

    async def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = await self.wait_once(job_id, self._wait_slice(deadline))
            if self._wait_over(view, deadline):
                return view

    async def close(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()

    async def __aenter__(self) -> AsyncJobManagerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""The Python client's transport: its validated config, one request description (`Call`) and the
address/token/failover rules of wire.py, run over wire.py's keep-alive connections (the sync
client) or httpx (the async client). Everything above it (client.py) speaks plain API paths."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from . import wire
from .errors import from_response
from .lifecycle import is_terminal
from .views import JobView
from .wire import Address, Failover, Options, WireClient, auth_header, parse_addresses

__all__ = ["Address", "Call", "ClientConfig", "SyncTransport", "Transport", "parse_addresses"]

T = TypeVar("T")


class ClientConfig(BaseModel):
    """wire.Options, validated (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")
    timeout: float = Options.timeout
    retry_attempts: int = Options.retry_attempts
    failover_timeout: float = Field(Options.failover_timeout,
                                    description="with several addresses, keep retrying this long")
    connection_pool_size: int = Options.connection_pool_size
    heartbeat_interval: float = Options.heartbeat_interval
    ca: str | None = Field(None, description="PEM CA bundle that signed the daemon's TLS certificate "
                                             "($SAGE_OPS_CA); TCP addresses then use TLS")
    insecure: bool = Field(Options.insecure, description="send the token over plain HTTP to an address that "
                           "is not loopback all the same (anyone on the path can read it)")


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] | None = None
    json: Any = None
    timeout: float | None = None
    idempotent: bool = field(default=True)
    headers: dict[str, str] | None = None
    content: bytes | None = None  # a raw body (an upload) instead of `json`


def body_of(resp: httpx.Response) -> Any:
    return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def not_leader(resp: httpx.Response) -> bool:
    """A standby's answer to a write: try the other addresses (one of them leads)."""
    return resp.status_code == 503 and wire.not_leader(resp.status_code, _json_or_none(resp))


def raise_for(resp: httpx.Response) -> None:
    if resp.status_code >= 400:
        raise from_response(resp.status_code, _json_or_none(resp))


class Transport(Failover):
    """Address list, token and config shared by both clients (the failover policy is wire's)."""

    def __init__(self, address: str | None, config: dict[str, Any] | ClientConfig | None, token: str | None) -> None:
        self.addresses = parse_addresses(address)
        self.config = ClientConfig.model_validate(config or {})
        self.token = token
        self._current = 0
        self._redirected = False
        self._auth = {a: auth_header(a, token, self.config) for a in self.addresses}  # refused here, not later

    def _headers(self, addr: Address) -> dict[str, str]:
        return self._auth[addr]

    def _timeout(self) -> float:
        return self.config.timeout

    @staticmethod
    def _logs_params(follow: bool, tail: int | None, attempt: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"follow": str(follow).lower()}
        params.update({k: v for k, v in (("tail", tail), ("attempt", attempt)) if v is not None})
        return params

    @staticmethod
    def _wait_slice(deadline: float | None) -> float:
        return 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))

    @staticmethod
    def _wait_over(view: JobView, deadline: float | None) -> bool:
        return is_terminal(view.status) or (deadline is not None and time.monotonic() >= deadline)

    def _client_kwargs(self, i: int, transport_cls: Any) -> dict[str, Any]:
        addr = self.addresses[i]
        limits = httpx.Limits(max_connections=self.config.connection_pool_size)
        uds = {"uds": addr.target} if addr.kind == "unix" else {}
        ca = self.config.ca or os.environ.get("SAGE_OPS_CA")
        tls = addr.kind == "tcp" and (addr.tls or bool(ca))
        if tls:
            uds["verify"] = ssl.create_default_context(cafile=ca) if ca else True
        base = "http://sage-ops" if addr.kind == "unix" else f"{'https' if tls else 'http'}://{addr.target}"
        return {"transport": transport_cls(limits=limits, **uds), "base_url": base, "headers": self._headers(addr),
                "timeout": self.config.timeout}

    def _failed(self, exc: httpx.TransportError, call: Call[Any]) -> Exception:
        connect = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
        return self._transport_failed(exc, connect, call.idempotent)

    def _standby(self, resp: httpx.Response) -> Exception:
        return self._standby_answer(resp.status_code, _json_or_none(resp))

    def _done(self, i: int, resp: httpx.Response, call: Call[T]) -> T:
        self._current = i
        raise_for(resp)
        return call.parse(body_of(resp))


class SyncTransport(Transport):
    """The sync client's requests over wire.py: one keep-alive connection, no httpx (a request
    costs a few tens of microseconds on this side)."""

    def __init__(self, address: str | None, config: dict[str, Any] | ClientConfig | None, token: str | None) -> None:
        Transport.__init__(self, address, config, token)
        self._wire = WireClient(self.addresses, self.config, token, self._auth)

    def _run(self, call: Call[T]) -> T:
        return call.parse(self._wire.call(call.method, call.path, call.params, call.json, call.headers, call.timeout,
                                          call.idempotent, call.content))

    def _stream(self, path: str, params: dict[str, Any], parse: Callable[[bytes], T]) -> Iterator[T]:
        for line in self._wire.stream(path, params):
            yield parse(line)

    def close(self) -> None:
        self._wire.close()


LOG_TIMEOUT = httpx.Timeout(30.0, read=None)

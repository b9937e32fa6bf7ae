"""The client's transport: addresses (Unix socket or TCP, comma-separated for failover), the
bearer token, one request description (`Call`) and the retry/failover policy both clients share.
Everything above it (client.py) speaks plain API paths."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from . import paths
from .errors import DaemonUnavailable, SageOpsError, from_response
from .lifecycle import is_terminal
from .schemas import JobView

T = TypeVar("T")


class ClientConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: float = 30.0
    retry_attempts: int = 3
    failover_timeout: float = Field(20.0, description="with several addresses, keep retrying this long")
    connection_pool_size: int = 16
    heartbeat_interval: float = 30.0
    ca: str | None = Field(None, description="PEM CA bundle that signed the daemon's TLS certificate "
                                             "($SAGE_OPS_CA); TCP addresses then use TLS")


@dataclass(frozen=True)
class Address:
    kind: str  # "unix" | "tcp"
    target: str  # socket path or host:port
    tls: bool = False

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix://{self.target}"
        return f"{'https' if self.tls else 'tcp'}://{self.target}"


def parse_addresses(value: str | None = None) -> list[Address]:
    """`--address`, then $SAGE_OPS_ADDRESS, then the default socket; comma-separated = failover."""
    value = value or os.environ.get("SAGE_OPS_ADDRESS") or f"unix://{paths.default_socket()}"
    out = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if part.startswith("unix://"):
            out.append(Address("unix", part[len("unix://"):]))
        elif part.startswith("/"):
            out.append(Address("unix", part))
        else:
            tls = part.startswith(("https://", "tls://"))
            for prefix in ("tcp://", "http://", "https://", "tls://"):
                part = part.removeprefix(prefix)
            host, _, port = part.rpartition(":")
            if not host or not port.isdigit():
                raise SageOpsError(f"bad address {part!r}: use unix:///path, HOST:PORT, tcp://HOST:PORT or "
                                   "https://HOST:PORT", "bad_address")
            out.append(Address("tcp", part, tls))
    if not out:
        raise SageOpsError("no daemon address given", "bad_address")
    return out


def _token(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("SAGE_OPS_TOKEN"):
        return os.environ["SAGE_OPS_TOKEN"]
    try:
        return paths.token_file().read_text().strip() or None
    except OSError:
        return None


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


def body_of(resp: httpx.Response) -> Any:
    return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def not_leader(resp: httpx.Response) -> bool:
    """A standby's answer to a write: try the other addresses (one of them leads)."""
    if resp.status_code != 503:
        return False
    body = _json_or_none(resp)
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("code") == "not_leader"


def raise_for(resp: httpx.Response) -> None:
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            body = None
        raise from_response(resp.status_code, body)


class Transport:
    """Address list, token and failover shared by both clients."""

    def __init__(self, address: str | None, config: dict[str, Any] | ClientConfig | None, token: str | None) -> None:
        self.addresses = parse_addresses(address)
        self.config = ClientConfig.model_validate(config or {})
        self.token = token
        self._current = 0
        self._redirected = False

    def _headers(self, addr: Address) -> dict[str, str]:
        """TCP needs a token (given, $SAGE_OPS_TOKEN or the local admin's file); on the Unix socket
        the kernel says who we are, unless a token is given explicitly (to act as that token)."""
        token = _token(self.token) if addr.kind == "tcp" else (self.token or os.environ.get("SAGE_OPS_TOKEN"))
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _timeout(self) -> float:
        return self.config.timeout

    @staticmethod
    def _logs_params(follow: bool, tail: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {"follow": str(follow).lower()}
        if tail is not None:
            params["tail"] = tail
        return params

    @staticmethod
    def _wait_slice(deadline: float | None) -> float:
        return 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))

    @staticmethod
    def _wait_over(view: JobView, deadline: float | None) -> bool:
        return is_terminal(view.status) or (deadline is not None and time.monotonic() >= deadline)

    def _order(self) -> list[int]:
        n = len(self.addresses)
        return [(self._current + i) % n for i in range(n)]

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

    def _rounds(self) -> Iterator[int]:
        """Rounds over the address list: `retry_attempts` of them; with several addresses (or a
        standby that names another leader) keep going for up to `failover_timeout` seconds, so
        a failover between daemons is ridden out without the caller seeing it."""
        start, attempt = time.monotonic(), 0
        while True:
            yield attempt
            attempt += 1
            several = len(self.addresses) > 1 or self._redirected
            if attempt >= self.config.retry_attempts and (
                    not several or time.monotonic() - start > self.config.failover_timeout):
                return

    def _backoff(self, attempt: int) -> float:
        return min(0.2 * 2**attempt, 1.0)

    def _failed(self, exc: httpx.TransportError, call: Call[Any]) -> Exception:
        """Remember a transport error to try the next address, or raise when retrying is unsafe
        (a request that may have been applied and carries no idempotency key)."""
        connect = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
        if not connect and not call.idempotent:
            raise self._unavailable(exc) from None
        return exc

    def _standby(self, resp: httpx.Response) -> Exception:
        self._redirected = True
        return from_response(resp.status_code, _json_or_none(resp))

    def _gave_up(self, last: Exception | None) -> Exception:
        return last if isinstance(last, SageOpsError) else self._unavailable(last)

    def _done(self, i: int, resp: httpx.Response, call: Call[T]) -> T:
        self._current = i
        raise_for(resp)
        return call.parse(body_of(resp))

    def _unavailable(self, last: Exception | None) -> DaemonUnavailable:
        where = ", ".join(str(a) for a in self.addresses)
        if last is not None and "CERTIFICATE_VERIFY_FAILED" in str(last):
            return DaemonUnavailable(f"the TLS certificate of {where} is not trusted: give the CA that signed it "
                                     "with --ca or $SAGE_OPS_CA")
        why = f" ({last.__class__.__name__})" if last else ""
        hint = " — is it running? try: sage-ops daemon start" if len(self.addresses) == 1 else ""
        return DaemonUnavailable(f"cannot reach the sage-ops daemon at {where}{why}{hint}")


LOG_TIMEOUT = httpx.Timeout(30.0, read=None)

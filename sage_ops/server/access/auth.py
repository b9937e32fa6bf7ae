"""Who is calling, and may they: identities (the Unix socket peer's uid, or a bearer token),
roles, the per-identity rate limit, the request body limit, and the audit of what they did.

`Gate` is an ASGI wrapper in front of the whole API, on both listeners: it settles the caller's
`Principal` before any route runs (routes then only ask "may this principal see that job"),
refuses what no route should see (no identity, a viewer writing, too fast, too big), and
records every mutating call and every denial in the audit trail after the answer is known.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ...access import Role
from ...config import SecurityConfig
from ...workdir import MAX_PACKAGE_BYTES
from ..storage import accounts

if TYPE_CHECKING:
    from ..storage.store import Store

log = logging.getLogger(__name__)

PEER_UID = "sage_ops.peer_uid"  # scope keys this module sets and the routes read
PRINCIPAL = "sage_ops.principal"
DENIED = "sage_ops.denied"  # a route refused a job of another tenant (answered 404)
TARGET = "sage_ops.target"  # what a route acted on, for the audit (e.g. the job ids it created)
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_PREFIX = "so_"
# the next step after a 401: where a token comes from (the client adds how to give it)
GET_ONE = ("an admin creates one on the daemon's machine: sage-ops token create --tenant TENANT --name NAME, "
           "then give it with --token-file FILE or $SAGE_OPS_TOKEN")


def new_token() -> tuple[str, str]:
    """A fresh token (256 random bits) and the hash that is all the daemon keeps of it."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, digest_of(token)


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    actor: str  # "token:ci-bot#3", "uid:1001"
    role: Role
    tenant: str | None
    via: str  # "unix" | "token"
    token_id: int | None = None
    rate: float | None = None  # requests/s; None: the daemon's default; 0: unlimited
    uid: int | None = None  # a socket caller's uid (its jobs run as it on a multi-user daemon)

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN

    def sees(self, tenant: str | None) -> bool:
        """May this principal see (and, unless a viewer, act on) a job of `tenant`?"""
        return self.admin or tenant == self.tenant


class PeerProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, plus the kernel's word (SO_PEERCRED) on who is at the other end
    of a Unix socket connection."""

    peer_uid: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            self.peer_uid = struct.unpack("3i", creds)[1]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[PEER_UID] = self.peer_uid  # type: ignore[literal-required]


class Identities:
    """The daemon's view of tokens and local users, refreshed from the database every few
    seconds and at once after a change made here (a revoked token stops working at once)."""

    REFRESH = 2.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self.owner = os.getuid()
        self.tokens: dict[str, tuple[str, Principal, float | None]] = {}  # hash -> (hash, who, expires)
        self.users: dict[int, Principal] = {}
        self.run_as: dict[str, str | None] = {}  # tenant -> the Unix user its token callers' jobs run as
        self.used: dict[int, float] = {}  # token id -> last use, written with the audit
        self._written: dict[int, float] = {}
        self._admins: dict[int, Principal] = {}

    async def refresh(self) -> None:
        now = time.time()
        rows, peers, tenants = await self.store.read(
            lambda c: (accounts.live_tokens(c, now), accounts.peers(c), accounts.tenants(c)))
        self.tokens = {r.hash: (r.hash, Principal(f"token:{r.name}#{r.id}", Role(r.role), r.tenant, "token", r.id,
                                                 r.rate_limit), r.expires_at) for r in rows}
        self.users = {p.uid: Principal(f"uid:{p.uid}", Role(p.role), p.tenant, "unix", uid=p.uid) for p in peers}
        self.run_as = {t.name: t.run_as for t in tenants}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.REFRESH)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep the last good view; the database may be back soon
                log.warning("cannot refresh tokens: %s", exc)

    def resolve(self, authorization: bytes | None, peer_uid: int | None) -> Principal | str:
        """The caller, or why not."""
        if authorization:
            value = authorization.decode("latin-1")
            if value[:7].lower() != "bearer ":
                return "use `Authorization: Bearer <token>`"
            digest = digest_of(value[7:].strip())
            found = self.tokens.get(digest)
            if found is None or not hmac.compare_digest(found[0], digest):
                return f"invalid or revoked token ({GET_ONE})"
            if found[2] is not None and found[2] <= time.time():
                return f"token expired ({GET_ONE})"
            who = found[1]
            self.used[who.token_id or 0] = time.time()
            return who
        if peer_uid is None:
            return f"a valid bearer token is required ({GET_ONE})"
        if peer_uid in (self.owner, 0):
            return self._admins.get(peer_uid) or self._admins.setdefault(
                peer_uid, Principal(f"uid:{peer_uid}", Role.ADMIN, None, "unix", rate=0, uid=peer_uid))
        who = self.users.get(peer_uid)
        return who or f"uid {peer_uid} is not mapped to a tenant (sage-ops tenant add-user)"

    def take_used(self, every: float = 60.0) -> dict[int, float]:
        """Token uses to record (at most one write per token per minute)."""
        out = {t: when for t, when in self.used.items() if when - self._written.get(t, 0.0) >= every}
        self._written.update(out)
        self.used.clear()
        return out


class RateLimiter:
    """A token bucket per identity: `rate` requests/s on average, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}

    def wait_for(self, who: Principal) -> float:
        """0 if the request may go now, else the seconds until it could."""
        rate = self.rate if who.rate is None else who.rate
        if not rate:
            return 0.0
        burst = float(self.burst) if who.rate is None else max(1.0, 2 * rate)  # a token's own rate: 2 s of burst
        now = time.monotonic()
        level, last = self.buckets.get(who.actor, (burst, now))
        level = min(burst, level + (now - last) * rate)
        if level < 1:
            self.buckets[who.actor] = (level, now)
            return (1 - level) / rate
        self.buckets[who.actor] = (level - 1, now)
        return 0.0


class AuditLog:
    """Audit rows are gathered for a moment and written in one statement, in the store's next
    group commit (an audit row per request must not cost a transaction per request)."""

    def __init__(self, store: Store, identities: Identities, retention: float) -> None:
        self.store, self.identities, self.retention = store, identities, retention
        self.pending: list[dict[str, Any]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._purged = 0.0

    def record(self, who: Principal | None, action: str, status: int, target: str | None = None,
               detail: str | None = None) -> None:
        self.pending.append({"time": time.time(), "actor": who.actor if who else "anonymous",
                             "tenant": who.tenant if who else None, "action": action[:64],
                             "target": target[:200] if target else None, "status": status,
                             "detail": detail[:500] if detail else None})
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        await asyncio.sleep(0)  # gather the rows of this loop turn
        rows, self.pending = self.pending, []
        used = self.identities.take_used()
        now = time.time()
        purge = now - self._purged > 3600
        if purge:
            self._purged = now

        def op(conn: Any) -> None:
            accounts.add_audit(conn, rows)
            accounts.touch_tokens(conn, used)
            if purge:
                accounts.purge_audit(conn, now - self.retention)

        try:
            await self.store.write(op, fenced=False)  # a standby audits the requests it answers too
        except Exception as exc:  # noqa: BLE001 - never fail a request over its audit row
            log.error("cannot write %d audit events: %s", len(rows), exc)


class Denials:
    """Requests without a valid identity reach the audit as one row per peer per interval: the
    first as it comes, the rest as one row with their count when the interval ends. A client
    looping on a bad token (or a scan) costs a hash and a small answer, never a row each."""

    MAX_PEERS = 10_000  # peers tracked at once; past it (a spoofing flood) they share one count

    def __init__(self, audit: AuditLog, interval: float) -> None:
        self.audit, self.interval = audit, interval
        self.windows: dict[str, list[Any]] = {}  # peer -> [start, count, target, reason, timer]

    def record(self, peer: str, target: str, reason: str) -> None:
        now = time.monotonic()
        w = self.windows.get(peer)
        if w is None or (not w[1] and now - w[0] >= self.interval):
            if w is None and len(self.windows) >= self.MAX_PEERS:
                self._prune(now)
                if len(self.windows) >= self.MAX_PEERS:
                    self.record("many peers", target, reason)
                    return
            self.windows[peer] = [now, 0, target, reason, None]
            self.audit.record(None, "denied", 401, target, f"{reason} (from {peer})")
            return
        w[1] += 1
        w[2], w[3] = target, reason
        if w[4] is None:
            w[4] = asyncio.get_running_loop().call_later(w[0] + self.interval - now, self._summarize, peer)

    def _summarize(self, peer: str) -> None:
        """The interval's count; a new interval starts now, so a steady flood is a row per interval."""
        w = self.windows[peer]
        self.audit.record(None, "denied", 401, w[2], f"{w[1]} more denied requests from {peer} in the last "
                          f"{self.interval:g}s ({w[3]})")
        self.windows[peer] = [time.monotonic(), 0, w[2], w[3], None]

    def _prune(self, now: float) -> None:
        for peer in [p for p, w in self.windows.items() if not w[1] and now - w[0] >= self.interval]:
            del self.windows[peer]

    def close(self) -> None:
        """At shutdown: the counts of the intervals in progress, now."""
        for peer, w in list(self.windows.items()):
            if w[4] is not None:
                w[4].cancel()
                self._summarize(peer)


ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Gate:
    def __init__(self, app: ASGIApp, identities: Identities, limiter: RateLimiter, audit: AuditLog,
                 cfg: SecurityConfig, denials: Denials) -> None:
        self.app, self.identities, self.limiter, self.audit, self.denials = app, identities, limiter, audit, denials
        self.max_body = cfg.max_body_bytes
        self._last_429: dict[str, float] = {}  # one audit row per second per throttled identity

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = length = None
        chunked = False
        for k, v in scope["headers"]:
            if k == b"authorization":
                auth = v
            elif k == b"content-length":
                length = v
            elif k == b"transfer-encoding":
                chunked = b"chunked" in v.lower()
        method = scope["method"]
        who = self.identities.resolve(auth, scope.get(PEER_UID))
        if isinstance(who, str):
            await self._deny(scope, send, None, 401, "unauthorized", who)
            return
        if who.role is Role.VIEWER and method not in SAFE:
            await self._deny(scope, send, who, 403, "forbidden", "a viewer token is read-only")
            return
        if wait := self.limiter.wait_for(who):
            await self._deny(scope, send, who, 429, "rate_limited",
                             f"too many requests from {who.actor}; retry in {wait:.2f}s", wait)
            return
        limit = self.max_body
        if method == "PUT" and scope["path"].startswith("/v1/packages/"):  # a shipped working directory
            limit = max(limit, MAX_PACKAGE_BYTES)
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._too_large(scope, send, who, limit)
            return
        if chunked:  # no declared length: read it here, up to the limit
            body = await self._read_capped(receive, limit)
            if body is None:
                await self._too_large(scope, send, who, limit)
                return
            receive = _replay(body)
        scope[PRINCIPAL] = who
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, sending)
        denied = scope.get(DENIED)
        if method not in SAFE or denied or status in (401, 403, 413, 429):
            endpoint = scope.get("endpoint")
            action = endpoint.__name__ if endpoint is not None else f"{method} {scope['path']}"
            params = scope.get("path_params") or {}
            target = scope.get(TARGET) or next(iter(params.values()), None)
            self.audit.record(who, "denied" if denied else action, 404 if denied else status, target, denied)

    async def _too_large(self, scope: dict[str, Any], send: Any, who: Principal, limit: int) -> None:
        await self._deny(scope, send, who, 413, "too_large", f"request body over {limit} bytes")

    async def _read_capped(self, receive: Any, limit: int) -> bytes | None:
        parts, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)

    async def _deny(self, scope: dict[str, Any], send: Any, who: Principal | None, status: int, code: str,
                    message: str, retry_after: float = 0.0) -> None:
        """Answer before reading the body: uvicorn discards what the client still sends, so
        even a client that writes its whole 100 MB first gets to read this."""
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if retry_after:
            headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        target = f"{scope['method']} {scope['path']}"
        if who is None:
            client = scope.get("client")
            self.denials.record(f"ip:{client[0]}" if client else f"uid:{scope.get(PEER_UID)}", target, message)
        elif status != 429 or self._audit_429(who):
            self.audit.record(who, "denied", status, target, message)

    def _audit_429(self, who: Principal | None) -> bool:
        key, now = (who.actor if who else ""), time.monotonic()
        if now - self._last_429.get(key, 0.0) < 1.0:
            return False
        self._last_429[key] = now
        return True


def _replay(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive

"""Limits on the daemon's connections, so that idle or half-sent ones cannot use up its file
descriptors (which the Unix socket, the database and Ray need too): a cap on the listener's
connections and on those of one peer address, and a deadline for each request head.

uvicorn closes a connection idle between requests (`timeout_keep_alive`), but not one that never
completes a request head: without this, 1,100 silent connections starved both listeners."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time

from ..access.auth import PeerProtocol

log = logging.getLogger(__name__)

BUSY_BODY = json.dumps({"error": {"code": "busy", "message": "too many connections; retry shortly"}}).encode()
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        b"connection: close\r\ncontent-length: " + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)


class Guard:
    """One listener's connection count, per peer address too. `None`: no cap."""

    REPORT_EVERY = 60.0

    def __init__(self, name: str, max_connections: int | None, per_peer: int | None, header_timeout: float) -> None:
        self.name, self.max, self.per_peer, self.header_timeout = name, max_connections, per_peer, header_timeout
        self.open = 0
        self.by_peer: dict[str, int] = {}
        self.refused = 0
        self._reported = 0.0

    def admit(self, peer: str | None) -> bool:
        held = self.by_peer.get(peer, 0) if peer is not None else 0
        if (self.max is not None and self.open >= self.max) or (
                self.per_peer is not None and peer is not None and held >= self.per_peer):
            self._refused(peer)
            return False
        self.open += 1
        if peer is not None:
            self.by_peer[peer] = held + 1
        return True

    def release(self, peer: str | None) -> None:
        self.open -= 1
        if peer is not None:
            left = self.by_peer.pop(peer, 1) - 1
            if left:
                self.by_peer[peer] = left

    def _refused(self, peer: str | None) -> None:
        """Counted, and logged at most once a minute (a flood must not flood the log)."""
        self.refused += 1
        now = time.monotonic()
        if now - self._reported >= self.REPORT_EVERY:
            self._reported = now
            log.warning("%s: refused %d connections over the caps (%s open, last from %s; "
                        "jobmanager.max_connections, max_connections_per_ip)", self.name, self.refused,
                        self.open, peer or "?")
            self.refused = 0


class GuardedProtocol(PeerProtocol):
    """uvicorn's HTTP protocol under a Guard: a connection over a cap gets a 503 and is closed at
    once; one whose request head is not complete `header_timeout` seconds after it opened (or
    after its previous response) is closed. One timer per request: cheap at thousands a second."""

    guard: Guard
    _admitted = False
    _peer: str | None = None
    _head: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client else None
        if not self.guard.admit(peer):
            transport.write(BUSY)
            transport.close()
            return
        self._admitted, self._peer = True, peer
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._admitted:
            self._admitted = False
            self.guard.release(self._peer)
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and not self.transport.is_closing():
            self._arm()  # the next request's head is due in time too (idle or dribbling)

    def _arm(self) -> None:
        self._disarm()
        self._head = self.loop.call_later(self.guard.header_timeout, self._late)

    def _disarm(self) -> None:
        if self._head is not None:
            self._head.cancel()
            self._head = None

    def _late(self) -> None:
        self._head = None
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()


def guarded(guard: Guard) -> type[GuardedProtocol]:
    """The protocol class of one listener (uvicorn takes a class, not an instance)."""
    return type(f"Guarded_{guard.name}", (GuardedProtocol,), {"guard": guard})


def open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one (as Ray and Go do) and return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def tcp_cap(configured: int, open_files: int) -> int:
    """At most half the process's file descriptors for TCP connections: the other half stays
    for the Unix socket, the database, job logs and Ray, whatever TCP peers do."""
    return max(1, min(configured, open_files // 2))

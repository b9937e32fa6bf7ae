"""`sage-ops web`: the dashboard served for one person on loopback by a process of their own,
a client of the daemon like the TUI. It prints a one-time login link; following it puts a token
into the browser's session cookie: the one given to `sage-ops web` (--token-file), else a
short-lived one of the person's own rights (POST /v1/tokens/self, for the daemon's admins on
its socket), so the page never rides on this process's own identity."""

from __future__ import annotations

import hmac
import os
import secrets
import socket
import time
from typing import Any

from .api import OverHttp
from .pages import Dashboard

LINK_TTL = 600.0  # seconds a login link may wait to be followed
HERE = ("127.0.0.1", 0)


class OneTimeLink:
    def __init__(self, api: OverHttp, token: str | None, ttl: float = LINK_TTL) -> None:
        """`token`: the caller's own (--token), else the daemon knows it by its socket."""
        self.api, self.token = api, token
        self.code = secrets.token_urlsafe(24)
        self.expires = time.monotonic() + ttl
        self.used = False

    async def redeem(self, code: str) -> str | None:
        """The token for whoever follows the link first, in time; None after that."""
        if self.used or time.monotonic() > self.expires or not hmac.compare_digest(code, self.code):
            return None
        self.used = True
        if self.token:  # the caller's own token: the browser logs in with it
            await self.api.call("GET", "/v1/whoami", self.token, HERE)
            return self.token
        answer = await self.api.call("POST", "/v1/tokens/self", None, HERE, body={})
        return str(answer["token"])


def serve(address: str, token: str | None, port: int, verify: Any = True) -> None:
    """Serve until interrupted; print where, and the login link."""
    import uvicorn

    api = OverHttp(address, verify)
    link = OneTimeLink(api, token)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = Dashboard(api, os.urandom(32), secure=False, redeem=link.redeem)
    print(f"dashboard of {address} at {base}/ (Ctrl-C stops it)")
    print(f"log in once with: {base}/web/login?code={link.code}  (valid {LINK_TTL / 60:.0f} min, for one browser)",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


"""The dashboard's session: one cookie sealing the visitor's API token with its CSRF secret and
expiry (AES-GCM with a key the daemon derives from its sealing key, so the browser never holds the
token in clear and every daemon of the database opens it after a restart or a failover)."""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE = "sage_ops_session"
LIFETIME = 12 * 3600.0  # seconds: a working day; then the login form again
_AAD = b"sage-ops web session v1"


@dataclass(frozen=True)
class Session:
    token: str
    csrf: str  # sent back with every form that acts; a page of another site cannot read it
    expires: float


class Sessions:
    def __init__(self, key: bytes) -> None:
        self.aead = AESGCM(key[:32])

    def new(self, token: str) -> tuple[str, Session]:
        """A session for `token`, and its cookie value."""
        session = Session(token, secrets.token_urlsafe(24), time.time() + LIFETIME)
        nonce = os.urandom(12)
        body = json.dumps({"t": session.token, "c": session.csrf, "e": session.expires}).encode()
        return base64.urlsafe_b64encode(nonce + self.aead.encrypt(nonce, body, _AAD)).decode(), session

    def open(self, value: str | None) -> Session | None:
        """The session a cookie holds, or None (none, forged, or expired)."""
        if not value:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.encode())
            data = json.loads(self.aead.decrypt(raw[:12], raw[12:], _AAD))
        except (ValueError, InvalidTag):
            return None
        session = Session(data["t"], data["c"], float(data["e"]))
        return session if session.expires > time.time() else None


def csrf_ok(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf, given)

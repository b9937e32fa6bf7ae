"""Opened secrets cross Ray sealed for transit: the scheduler seals a job's opened `secret_env`
with the cluster's transit key (AES-GCM, bound to the job and attempt), and the runner opens it on
the node just before the job's spawn. A task's arguments cross the network (plaintext gRPC unless
`ray.tls`), sit in Ray's task specs and may be spilled or logged by Ray: they never hold a secret
in clear.

The key is a file owned by the Ray user (0600) on every node: the head's next to its Ray token,
a node's put there by `nodes add`. Its path is in TRANSIT_ENV of the node's Ray processes, which
job_env's allow-list never passes to a job.

Imported on Ray workers: standard library and cryptography only.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TRANSIT_ENV = "SAGE_OPS_TRANSIT_KEY"
PREFIX = "sgo-transit-1:"
_boxes: dict[str, AESGCM] = {}  # by key file: read once per process


class TransitError(Exception):
    """The secrets cannot be sealed or opened; `message` is one line that says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def new_key() -> str:
    """A fresh transit key as the key file holds it (base64 of 256 bits)."""
    return base64.b64encode(AESGCM.generate_key(256)).decode()


def _box(environ: Mapping[str, str]) -> AESGCM:
    path = environ.get(TRANSIT_ENV)
    if not path:
        raise TransitError(f"no transit key here (${TRANSIT_ENV} is not set on this Ray node; start its Ray "
                           "with sage-ops: `nodes add` again, or restart the head with `daemon stop --ray`)")
    box = _boxes.get(path)
    if box is None:
        try:
            with open(path, "rb") as f:
                box = _boxes[path] = AESGCM(base64.b64decode(f.read().strip(), validate=True))
        except OSError as exc:
            raise TransitError(f"cannot read the transit key {path}: {exc.strerror}") from None
        except ValueError:
            raise TransitError(f"the transit key {path} is not a 256-bit key in base64") from None
    return box


def _bound(job_id: str, attempt: int) -> bytes:
    return f"{job_id}\0{attempt}".encode()


def seal(secret: Mapping[str, str], job_id: str, attempt: int, environ: Mapping[str, str] = os.environ) -> str:
    """`secret` as the task argument carries it: opened only with the key, for this job and attempt."""
    nonce = secrets.token_bytes(12)
    data = _box(environ).encrypt(nonce, json.dumps(dict(secret)).encode(), _bound(job_id, attempt))
    return PREFIX + base64.b64encode(nonce + data).decode()


def opened(opts: Mapping[str, Any], job_id: str, attempt: int,
           environ: Mapping[str, str] = os.environ) -> tuple[dict[str, str], str | None]:
    """(the job's secrets, None), or ({}, why the attempt cannot start: a sealed value this node
    cannot open, or secrets that came unsealed)."""
    blob = opts.get("secret_env")
    if not blob:
        return {}, None
    if not isinstance(blob, str) or not blob.startswith(PREFIX):
        return {}, "secrets arrived unsealed: refused (the daemon and this node run different sage-ops versions?)"
    try:
        raw = base64.b64decode(blob[len(PREFIX):], validate=True)
        data = _box(environ).decrypt(raw[:12], raw[12:], _bound(job_id, attempt))
    except TransitError as exc:
        return {}, exc.message
    except (InvalidTag, ValueError):
        return {}, f"secrets cannot be opened with this node's transit key (${TRANSIT_ENV}): it is not the " \
                   "head's; add the node again"
    return json.loads(data), None

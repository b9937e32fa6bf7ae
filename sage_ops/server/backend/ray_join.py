"""Joining a Ray cluster the daemon did not start (`ray.address: HOST:PORT`): only with Ray's token
auth, and only the cluster expected.

A cluster answers for its id (the GCS's cluster id). The first join pins it in the state dir, as
SSH pins a host key; a later join to another cluster at that address (re-created, or someone
else's on a port that was ours) is refused until the operator says so: `ray.cluster_id` names the
expected id outright, or the pin file is removed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from ...errors import DaemonUnavailable

log = logging.getLogger(__name__)


class Refused(DaemonUnavailable):
    """Not a cluster to join, now or on retry: the daemon stops with this one line."""

TOKEN_VARS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def require_token(address: str, env: Mapping[str, str]) -> None:
    """A cluster of someone else's is joined with its token, never without auth."""
    if not any(env.get(k) for k in TOKEN_VARS):
        raise Refused(f"ray.address {address} is a cluster this daemon did not start: give its token "
                                "(RAY_AUTH_TOKEN_PATH=FILE in the daemon's environment; Ray's token auth)")


def check(pin_file: Path, address: str, cluster_id: str, expected: str | None) -> None:
    """Refuse a cluster other than the one expected at `address`; pin it on the first join."""
    if expected:
        if cluster_id != expected:
            raise Refused(f"the Ray cluster at {address} has id {cluster_id}, not ray.cluster_id "
                                    f"{expected}: refusing to join it")
        return
    try:
        pins = json.loads(pin_file.read_text())
    except (FileNotFoundError, ValueError):
        pins = {}
    pinned = pins.get(address)
    if pinned is None:
        pins[address] = cluster_id
        pin_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = pin_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(pins))
        os.replace(tmp, pin_file)
        log.info("joined the Ray cluster at %s (id %s) for the first time: pinned in %s", address, cluster_id,
                 pin_file)
    elif pinned != cluster_id:
        raise Refused(f"the Ray cluster at {address} is not the one this daemon joined before (id "
                                f"{cluster_id}, pinned {pinned}): if it was re-created, set ray.cluster_id or "
                                f"remove {pin_file}")

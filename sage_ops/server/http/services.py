"""What the HTTP routes use, handed to them by the daemon: the parts themselves, never the daemon
(which would let a route reach anything, and import the layer above it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...config import Config
    from ..access.auth import AuditLog, Identities
    from ..backend.ray_backend import RayBackend
    from ..pools.autoscaler import Autoscaler
    from ..scheduling.run_as import RunAs
    from ..scheduling.scheduler import Scheduler
    from ..services.event_stream import EventHub
    from ..services.leadership import Leadership
    from ..services.provisioning import Provisioner
    from ..services.retention import Retention
    from ..storage.blobs import BlobStore
    from ..storage.logs import LogStore
    from ..storage.results import ResultStore
    from ..storage.store import Store


@dataclass
class Listening:
    """Where this daemon answers and since when, for `/v1/health`: the TCP address is known only
    once the daemon has bound it."""

    socket: Path
    started_at: float
    tcp: str | None = None


@dataclass(frozen=True)
class Services:
    cfg: Config
    store: Store
    scheduler: Scheduler
    logs: LogStore
    events: EventHub
    run_as: RunAs
    identities: Identities
    audit: AuditLog
    ray: RayBackend
    leadership: Leadership
    provisioner: Provisioner
    listening: Listening
    results: ResultStore  # where a result over storage.inline_result_bytes is kept
    retention: Retention | None = None  # `gc`: a sweep now, or its dry run
    pools: Autoscaler | None = None  # the elastic pools (nodes.pools), if any
    blobs: BlobStore | None = None  # jobs' files beyond this machine (storage.url): shipped working directories

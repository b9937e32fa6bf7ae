"""API shapes of the cluster's machines — adding a node over SSH, its progress, draining and the
node list — shared by the server, the client and the CLI's --json (schemas.py, views.py, bodies.py:
jobs; telemetry.py: health, stats and metrics)."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from .lifecycle import NodeStatus
from .nodes.base import HOST_PATTERN, NAME_PATTERN, USER_PATTERN
from .schemas import Strict
from .telemetry import NodeUsage
from .views import View

_HOST = re.compile(HOST_PATTERN)
_USER = USER_PATTERN
_RESOURCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,127}$")


class NodeAdd(Strict):
    """Make a machine a Ray node of this cluster, over SSH (admins)."""

    host: str = Field(description="host name or IP address")
    user: str | None = Field(None, pattern=_USER, description="SSH user (default: the daemon's)")
    port: int = Field(22, ge=1, le=65535)
    name: str | None = Field(None, pattern=NAME_PATTERN, description="node name (default: the host)")
    key_file: str | None = Field(None, max_length=1024, description="private key on the daemon's machine "
                                 "(absolute path; default: the SSH agent, then ~/.ssh/id_*)")
    accept_new_host_key: bool = Field(False, description="record an unknown host key (a changed one is refused)")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources of the node")
    num_cpus: int | None = Field(None, ge=0, le=100_000)
    num_gpus: int | None = Field(None, ge=0, le=10_000)
    wheel_dir: str | None = Field(None, max_length=1024, description="wheels on the daemon's machine to install "
                                  "offline (sage-ops nodes wheels DIR makes them)")
    python: str = Field("python3", pattern=r"^[A-Za-z0-9_./+-]{1,256}$", description="the node's Python")
    venv: str | None = Field(None, pattern=r"^[A-Za-z0-9_./~+-]{1,512}$", description="where to install on the "
                             "node (default: the config's nodes.venv)")
    node_ip: str | None = Field(None, pattern=r"^[0-9A-Fa-f.:]{2,45}$", description="--node-ip-address for Ray")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not _HOST.match(v):
            raise ValueError(f"bad host {v[:80]!r}: a host name or an IP address")
        return v.strip("[]")

    @field_validator("key_file", "wheel_dir")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or "\0" in v):
            raise ValueError("must be an absolute path on the daemon's machine")
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, float]) -> dict[str, float]:
        if len(v) > 64:
            raise ValueError("at most 64 custom resources")
        for key, amount in v.items():
            if key in ("CPU", "GPU", "memory", "object_store_memory") or not _RESOURCE.match(key):
                raise ValueError(f"bad resource name {key[:80]!r} (CPU/GPU: use num_cpus/num_gpus)")
            if key.startswith(("node:", "sage_ops_node:")):
                raise ValueError(f"resource {key!r} is reserved")
            if not math.isfinite(amount) or amount <= 0 or amount > 1e9:
                raise ValueError(f"resource {key} must be a positive number")
        return v

    def node_name(self) -> str:
        return self.name or self.host


class NodeView(NodeUsage):
    name: str
    state: str = Field(description="JOINING, UP, FAILED, DRAINING, DRAINED; DOWN: UP but Ray no longer lists it")
    managed: bool = Field(description="added by sage-ops (False: the head, or started by someone else)")
    head: bool = False
    host: str | None = None
    user: str | None = None
    port: int | None = None
    address: str | None = Field(None, description="the node's address in Ray")
    ray_node_id: str | None = None
    resources: dict[str, float] = Field(default_factory=dict, description="custom resources")
    running_jobs: int = 0
    heartbeat_age_s: float | None = Field(None, description="seconds since Ray last listed it alive")
    detail: str | None = None
    added_at: datetime | None = None


class NodeProgress(View):
    """A line of a node operation's progress (NDJSON): a step starts, ends, is skipped or fails;
    the last line has step "end" and the node's state."""

    node: str
    step: str
    state: Literal["start", "done", "skip", "fail", "end"]
    detail: str = ""
    time: datetime
    node_state: NodeStatus | None = None


class NodeDrain(Strict):
    force: bool = Field(False, description="do not wait for its running jobs (they fail and retry elsewhere)")


class PoolNodeView(View):
    name: str
    host: str
    state: str = Field(description="JOINING, UP, DRAINING, DOWN, FAILED")
    running_jobs: int = 0
    idle_s: float | None = Field(None, description="seconds without a running job (UP nodes)")


class PoolView(View):
    """An elastic pool as its autoscaler last saw it (a standby daemon has seen nothing yet)."""

    name: str
    hosts: list[str]
    min: int
    max: int
    idle_timeout: float
    resources: dict[str, float] = Field(default_factory=dict)
    up: int = 0
    joining: int = 0
    draining: int = 0
    idle: int = 0
    desired: int = 0
    waiting_jobs: int = Field(0, description="jobs in line that only a new node of this pool would hold now")
    nodes: list[PoolNodeView] = Field(default_factory=list)
    last: str | None = Field(None, description="its last decision, or why it did not act")
    set_aside: dict[str, str] = Field(default_factory=dict, description="hosts resting after failures, and why")


class PoolEventView(View):
    time: datetime
    kind: str
    host: str | None = None
    reason: str


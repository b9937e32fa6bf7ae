"""How the daemon reaches a machine to make it a Ray node: the NodeBackend interface. The daemon,
the CLI and the TUI only know this file; `ssh.py` is one backend, another (a cloud API, a
scheduler's allocation) can be added beside it without touching them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# The steps of a bootstrap, in order: progress and errors name them.
STEPS = ("connect", "check python", "install", "join ray", "verify")
# The environment variable every Ray process of a node carries: how it is found again (stop,
# re-add) and how a job learns the name of the node it runs on.
NODE_ENV = "SAGE_OPS_NODE"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$|^\[?[0-9A-Fa-f:]+\]?$"  # a host name or an IP address
USER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$"
NODE_RESOURCE_PREFIX = "sage_ops_node:"


def node_resource(name: str) -> str:
    """The custom resource (amount 1) a node is started with: how Ray's node list shows which
    Ray node is which sage-ops node (this Ray has no node labels)."""
    return f"{NODE_RESOURCE_PREFIX}{name}"


class StepFailed(Exception):
    """A bootstrap step failed; `str()` is one line that starts with the step's name."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


@dataclass
class StepTimeouts:
    connect: float = 20
    check_python: float = 20
    install: float = 900  # a fresh venv with ray from wheels: ~20 s here, minutes over a slow link
    join_ray: float = 120
    verify: float = 60
    stop: float = 60

    def of(self, step: str) -> float:
        return float(getattr(self, step.replace(" ", "_")))


@dataclass
class NodeTarget:
    """How to reach the machine."""

    host: str
    user: str | None = None
    port: int = 22
    key_file: str | None = None  # None: the SSH agent, then ~/.ssh/id_* (as ssh does)
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts of the daemon's user
    accept_new_host_key: bool = False  # record an unknown host key (a changed key is always refused)

    def label(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


@dataclass
class JoinPlan:
    """What to make of the machine."""

    name: str  # the sage-ops node name; exported as NODE_ENV to its Ray processes
    head_address: str  # HOST:PORT of the Ray head as the node reaches it
    ray_version: str
    sage_ops_version: str
    python: tuple[int, int]  # Ray needs the same major.minor on every node
    ray_token: str | None = None  # copied to a 0600 file on the node; never on a command line
    transit_key: str | None = None  # the cluster's transit key (server.transit), the same way
    tls_dir: Path | None = None  # the daemon's cluster CA (nodes.tls) when Ray runs with TLS: it signs the node's key
    resources: dict[str, float] = field(default_factory=dict)
    num_cpus: int | None = None
    num_gpus: int | None = None
    # The daemon's own sage-ops wheel (own_wheel.py), copied over SFTP and installed from that file
    # (sage_ops_version is its version); None: `sage-ops==sage_ops_version` by name from the index.
    sage_ops_wheel: Path | None = None
    wheel_dir: Path | None = None  # local wheels for the rest, copied over SFTP: pip installs with --no-index
    venv: str = "~/.sage-ops/venv"  # on the node, under the user's home
    python_bin: str = "python3"  # the node's interpreter that makes the venv
    node_ip: str | None = None  # --node-ip-address (default: Ray picks)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for `ray start`
    timeouts: StepTimeouts = field(default_factory=StepTimeouts)


@dataclass
class JoinResult:
    name: str
    ray_node_id: str | None
    python: str  # the node's Python version, e.g. "3.11.7"
    installed: bool  # False: the venv already had the right versions
    already_joined: bool  # True: the node was up and listed already (idempotent add)
    seconds: dict[str, float] = field(default_factory=dict)  # per step


# progress(step, state, detail): state is "start", "done", "skip" or "fail"
Progress = Callable[[str, str, str], None]
# listed(name, timeout) -> Ray node id once Ray lists an alive node with node_resource(name)
# (the daemon answers from its Ray connection), else None at the timeout.
Listed = Callable[[str, float], "str | None"]


class NodeBackend(ABC):
    kind: str = "base"

    @abstractmethod
    def join(self, target: NodeTarget, plan: JoinPlan, progress: Progress, listed: Listed) -> JoinResult:
        """Make the machine a Ray node of the head (blocking). Idempotent: a node already up and
        listed is left running. Raises StepFailed; on failure what this call made is undone."""

    @abstractmethod
    def stop(self, target: NodeTarget, name: str, timeout: float = 60) -> int:
        """Stop the Ray processes of node `name` on the machine (and only them); returns how
        many processes were stopped. Raises StepFailed("stop", ...)."""

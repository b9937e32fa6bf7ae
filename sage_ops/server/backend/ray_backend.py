"""The daemon's side of Ray: find or start the head, connect, and talk to the dispatcher actor.

With `ray.address: auto` (or `local`) the daemon uses the head it started earlier, or starts a
local head as a separate long-lived process on loopback, with a Ray auth token of its own, so a
daemon restart never kills running jobs; it never follows $RAY_ADDRESS or /tmp/ray. HOST:PORT
joins that head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ... import paths, rayhead
from ...config import RayConfig
from ...errors import Conflict, DaemonUnavailable
from ...nodes import tls
from ...nodes.base import NODE_RESOURCE_PREFIX
from ...telemetry import RayHealth
from ..storage.sealing import Sealer
from . import ray_join
from .packages import Packages
from .protocol import AttemptItem, HelloReply, PollReply, SubmittedAttempt
from .transit import TRANSIT_ENV, new_key

if TYPE_CHECKING:
    from ..storage.blobs import BlobStore

log = logging.getLogger(__name__)
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_max_direct_call_object_size": str(64 << 20)}


class NodeInfo(NamedTuple):
    ray_id: str
    name: str
    address: str
    head: bool
    total: dict[str, float]
    available: dict[str, float]
    draining: bool


def _knock(address: str, timeout: float = 1.0) -> bool | None:
    """Does something accept connections at `address`: True, False (refused: nothing listens), or
    None (slow, unroutable, malformed: it says neither)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return False
    except (OSError, ValueError):
        return None


def _reachable(address: str, timeout: float = 1.0) -> bool:
    return _knock(address, timeout) is True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `ray start` with Ray's client server off: Ray starts it (on 10001, shared by every head of the
# machine) whenever grpc is importable, and has no flag to say no; it skips it when told the
# client's dependencies are missing, which is what this says.
NO_CLIENT_SERVER = ("import sys, ray.scripts.scripts as s; "
                    "s.get_ray_client_dependency_error = lambda: ImportError('off'); "
                    "sys.argv[0] = 'ray'; sys.exit(s.main())")


class LocalHead:
    """A Ray head that this daemon started and records in its state dir (finding and stopping
    its processes: sage_ops.rayhead, which the CLI uses without Ray). Its temp dir is a fresh
    private one each start (rayhead.new_temp_dir), named in the record only. Beside its Ray token:
    the cluster's transit key (server.transit) and, with `ray.tls`, its CA and certificate (nodes.tls)."""

    def __init__(self, state_dir: Path, use_tls: bool = False) -> None:
        self.state_dir = state_dir
        self.dir = rayhead.head_dir(state_dir)
        self.record = rayhead.record_file(state_dir)
        self.token_path = self.dir / "auth_token"
        self.transit_path = self.dir / "transit.key"
        self.tls = use_tls

    def load(self) -> dict[str, Any] | None:
        return rayhead.load_record(self.state_dir)

    def ours(self) -> dict[str, Any] | None:
        """The record of a head of ours to use again: its temp dir passes rayhead.unsafe and a
        process of ours carries its mark (a record pointing anywhere else is not followed)."""
        rec = self.load()
        if not rec or not isinstance(rec.get("temp_dir"), str) or not isinstance(rec.get("address"), str):
            return None
        why = rayhead.unsafe(Path(rec["temp_dir"]))
        if why is None and rayhead.find(self.state_dir).running and _reachable(rec["address"]):
            return rec
        if why is not None:
            log.warning("not using the Ray head recorded in %s: %s; starting one of our own", self.record, why)
        return None

    def env(self) -> dict[str, str]:
        env = {**RAY_ENV, "RAY_AUTH_TOKEN_PATH": str(self.token_path), TRANSIT_ENV: str(self.transit_path)}
        return {**env, **tls.ray_env(self.dir / "tls")} if self.tls else env

    def command(self, cfg: RayConfig, port: int, temp: Path) -> tuple[list[str], str | None]:
        """`ray start` for a head on `ray.node_ip` (loopback unless set), with only the ports asked
        for; and the dashboard URL."""
        ray = Path(sys.executable).parent / "ray"
        base = [str(ray) if ray.exists() else shutil.which("ray") or "ray"]
        if cfg.client_server_port is None:
            base = [sys.executable, "-c", NO_CLIENT_SERVER]
        cmd = [*base, "start", "--head", f"--node-ip-address={cfg.node_ip}", f"--port={port}", f"--temp-dir={temp}",
               "--disable-usage-stats"]
        if cfg.client_server_port is not None:
            cmd.append(f"--ray-client-server-port={cfg.client_server_port}")
        if cfg.metrics_export_port is not None:
            cmd.append(f"--metrics-export-port={cfg.metrics_export_port}")
        if cfg.num_cpus is not None:
            cmd.append(f"--num-cpus={cfg.num_cpus}")
        if not cfg.include_dashboard:
            return [*cmd, "--include-dashboard=false"], None
        dport = cfg.dashboard_port
        if _reachable(f"{cfg.dashboard_host}:{dport}", timeout=0.5):
            dport = _free_port()
            log.warning("dashboard port %d is taken; using %d", cfg.dashboard_port, dport)
        # the agent's HTTP port: a free one, not Ray's fixed 52365 that every head would share
        return [*cmd, "--include-dashboard=true", f"--dashboard-host={cfg.dashboard_host}",
                f"--dashboard-port={dport}", "--dashboard-agent-listen-port=0"], f"http://{cfg.dashboard_host}:{dport}"

    def start(self, cfg: RayConfig) -> str:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths.secret_file(self.token_path, lambda: secrets.token_hex(32))
        paths.secret_file(self.transit_path, new_key)
        if self.tls:
            tls.ensure_head(self.dir / "tls", [cfg.node_ip])
        rayhead.stop(self.state_dir)  # what is left of an earlier head of ours (it did not answer), its temp dir
        port = _free_port()
        temp = rayhead.new_temp_dir(cfg.temp_root)
        cmd, dashboard = self.command(cfg, port, temp)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update({**self.env(), rayhead.HEAD_ENV: str(temp)})
        if cfg.metrics_export_port is None:  # the agents' Prometheus endpoint (it answers without auth)
            env["RAY_enable_metrics_collection"] = "0"
        address = f"[{cfg.node_ip}]:{port}" if ":" in cfg.node_ip else f"{cfg.node_ip}:{port}"
        log.info("starting a local Ray head on %s (temp dir %s)", address, temp)
        # every process of the head inherits HEAD_ENV and keeps the session of `ray start`: how
        # rayhead finds them all, also those re-parented to init or renamed
        try:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        except OSError:
            rayhead.remove_temp_dir(temp)
            raise
        self.record.write_text(json.dumps({"address": address, "temp_dir": str(temp), "session": proc.pid,
                                           "dashboard": dashboard, "started_at": time.time(), "tls": self.tls}))
        try:
            stdout, stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            tail = (stderr or stdout).strip().splitlines()[-3:]
            self.stop()  # what a failed start left running
            raise DaemonUnavailable("could not start a Ray head: " + " | ".join(tail))
        return address

    def stop(self) -> bool:
        """Stop every process of this head and remove its temp dir (never `ray stop`, which
        kills every Ray on the host): False if some process survived."""
        return not rayhead.stop(self.state_dir)[1]


class RayBackend:
    """Connection to Ray and to this daemon's dispatcher actor (only this module imports ray).

    Its calls carry the daemon's dispatcher key, derived from the sealing key (so every daemon of
    the database, after a restart or a failover, holds the same one); each dispatched attempt
    gets a capability derived from it (`capability`), for its runner's calls only."""

    def __init__(self, cfg: RayConfig, state_dir: Path, instance: str, sealer: Sealer,
                 blobs: BlobStore | None = None) -> None:
        """`blobs`: where the packages (shipped working directories) it sends to nodes are kept."""
        self.cfg = cfg
        self.sealer = sealer
        self._key: bytes | None = None
        self.key_args: tuple[bytes, ...] = ()  # what each call to the actor starts with: the key
        self.head = LocalHead(state_dir, cfg.tls)
        self.actor_name = f"dispatcher-{hashlib.sha1(instance.encode()).hexdigest()[:12]}"
        self.address: str | None = None
        self.started_head = False
        self.joined = False  # ray.address names a cluster we did not start (ray_join)
        # the dispatcher actor's id as the database recorded it (the daemon sets it before connect)
        # and as attached: an actor of that name with another id is never called
        self.known_actor: str | None = None
        self.actor_id: str | None = None
        self.actor: Any = None
        self.connected = False
        self.detail: str | None = "connecting"
        self.executors = 0  # the dispatcher's long-lived executors, as its last poll said
        self.nodes: list[dict[str, Any]] = []
        self.available: dict[str, float] = {}
        self.available_by_node: dict[str, dict[str, float]] = {}
        self.draining: set[str] = set()  # Ray node ids
        self.last_seen: dict[str, float] = {}  # node name -> when Ray last listed it alive
        self.packages = Packages(blobs)  # shipped working directories in Ray's object store

    # -- connecting (blocking; run in a thread) ----------------------------------------------
    def _resolve(self) -> tuple[str, dict[str, str]]:
        want = self.cfg.address
        if want not in ("auto", "local"):
            env = dict(RAY_ENV)
            rec = self.head.load()
            if rec and rec["address"] == want and not any(os.environ.get(k) for k in ray_join.TOKEN_VARS):
                env.update(self.head.env())  # our own head, named by its address
            else:
                ray_join.require_token(want, os.environ)
                self.joined = True
            return want, env
        # 'auto' (the JobManager docs' value) and 'local': our own head. $RAY_ADDRESS and
        # /tmp/ray are never followed implicitly: any local user can write them, and joining
        # their cluster would hand them our jobs. Another cluster is joined by HOST:PORT only.
        rec = self.head.ours()
        if rec and bool(rec.get("tls")) != self.cfg.tls:
            log.warning("the running Ray head of ours has ray.tls %s: restarting it", "on" if rec.get("tls") else "off")
            rec = None
        if rec and rec["address"].rsplit(":", 1)[0].strip("[]") != self.cfg.node_ip:
            log.warning("the running Ray head of ours is at %s, not on ray.node_ip %s: restarting it", rec["address"],
                        self.cfg.node_ip)
            rec = None
        if rec:
            self.started_head = True
            return rec["address"], self.head.env()
        address = self.head.start(self.cfg)
        self.started_head = True
        return address, self.head.env()

    def connect(self) -> None:
        address, env = self._resolve()
        os.environ.update(env)  # Ray reads some of these at import time: set them first
        # ray.init prefers $RAY_ADDRESS to the address it is given: the starter's shell must not
        # choose the cluster (any local user can run one)
        os.environ.pop("RAY_ADDRESS", None)
        # A Ray driver exits its whole process when the head has been gone ~60 s; the daemon must
        # outlive its head (it reconnects, see Daemon._ray_lost), so never give up on our side.
        os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(10 * 365 * 86400))
        import ray

        self.address = address
        if not _reachable(address, timeout=5):
            raise DaemonUnavailable(f"Ray at {address} is not reachable")
        kwargs: dict[str, Any] = {}
        if self.started_head:  # the driver is on the head's node: its address
            kwargs["_node_ip_address"] = self.cfg.node_ip
        elif address.startswith("127.") or address.startswith("localhost"):
            kwargs["_node_ip_address"] = "127.0.0.1"
        ray.init(address=address, namespace=self.cfg.namespace, logging_level=logging.WARNING,
                 log_to_driver=False, configure_logging=False, **kwargs)
        if self.joined:  # a cluster we did not start: the one expected, or none
            cluster_id = ray._private.worker.global_worker.node.cluster_id.hex()
            try:
                ray_join.check(self.head.dir / "joined.json", address, cluster_id, self.cfg.cluster_id)
            except DaemonUnavailable:
                ray.shutdown()
                raise
        head = [n for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})]
        options: dict[str, Any] = {"name": self.actor_name, "lifetime": "detached", "get_if_exists": True}
        if head:
            options["resources"] = {"node:__internal_head__": 0.001}
        self.actor = self._attach(options)
        self.refresh_nodes()
        self.connected = True
        self.detail = None
        log.info("connected to Ray at %s (dispatcher %s)", address, self.actor_name)

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = self.sealer.derive(b"dispatcher")
        return self._key

    def capability(self, job_id: str, attempt: int) -> bytes:
        """What lets the runner of (job_id, attempt), and no one else, report on it."""
        return hmac.new(self.key, f"{job_id}:{attempt}".encode(), hashlib.sha256).digest()

    def _attach(self, options: dict[str, Any]) -> Any:
        """Our dispatcher actor: the one running, if it holds our key and runs this code (or
        runs older code and is busy), else a new one. A busy actor with another key is refused:
        its jobs are not ours to take over, nor to kill."""
        import ray

        from . import actor as actor_code

        def create() -> Any:
            return actor_code.Dispatcher.options(**options).remote(actor_code.key_hash(self.key))

        actor, self.key_args = create(), (self.key,)
        if self.known_actor and actor._actor_id.hex() != self.known_actor:
            # Not the actor we made: ours is gone and something else took its name. Never call it
            # (its replies would be un-pickled here); end it and make ours again.
            log.warning("the Ray actor named %s is not the dispatcher this database recorded (%s): replacing it",
                        self.actor_name, self.known_actor)
            ray.kill(actor)
            actor = create()
        hello: HelloReply
        try:
            hello = ray.get(actor.hello.remote(self.key), timeout=60)
            stale = hello.get("protocol") != actor_code.PROTOCOL and not hello.get("inflight")
        except PermissionError:
            busy = ray.get(actor.busy.remote(), timeout=60)
            if busy:
                raise DaemonUnavailable(
                    f"the Ray dispatcher {self.actor_name} (namespace {self.cfg.namespace}) holds another key "
                    f"(security.secret_key_file changed?) and runs {busy} jobs: it is replaced once they have "
                    "ended, or restore the key it was created with") from None
            stale = True
        except (TypeError, ray.exceptions.RayTaskError):  # an actor of a version before keys
            hello = ray.get(actor.hello.remote(), timeout=60)
            stale = not hello.get("inflight")
            if not stale:
                log.warning("the Ray dispatcher %s runs older code that checks no caller; it is replaced "
                            "once idle, at a later start", self.actor_name)
                self.key_args = ()
        if stale:
            ray.kill(actor)
            actor, self.key_args = create(), (self.key,)
        self.actor_id = actor._actor_id.hex()
        return actor

    def refresh_nodes(self) -> None:
        import ray
        from ray._private.state import state

        self.nodes = [n for n in ray.nodes() if n.get("Alive")]
        self.available = ray.available_resources()
        self.available_by_node = state.available_resources_per_node()
        now = time.time()
        for info in self.node_infos():
            self.last_seen[info.name] = now

    def node_totals(self, open_only: bool = False) -> list[tuple[str, dict[str, float]]]:
        """What each alive node holds, by Ray node id (host names repeat when several nodes
        share a machine). `open_only`: without draining nodes, which take no new jobs — though
        a job only they could hold still waits for them (admission counts every alive node)."""
        return [(n["NodeID"], dict(n.get("Resources", {}))) for n in self.nodes
                if not (open_only and n["NodeID"] in self.draining)]

    def node_infos(self) -> list[NodeInfo]:
        """Every alive Ray node with its sage-ops name: the one it was added under, else its host
        name (the head, nodes someone else started)."""
        out: list[NodeInfo] = []
        for n in self.nodes:
            total = dict(n.get("Resources", {}))
            marks = [k.split(":", 1)[1] for k in total if k.startswith(NODE_RESOURCE_PREFIX)]
            head = "node:__internal_head__" in total
            # a job reports the same name: its node's NODE_ENV, else the host name (runner.py)
            name = marks[0] if marks else n.get("NodeManagerHostname") or n["NodeID"][:12]
            if any(o.name == name for o in out):  # two unnamed nodes on one host
                name = f"{name}-{n['NodeID'][:6]}"
            out.append(NodeInfo(n["NodeID"], name, n.get("NodeManagerAddress", ""), head, total,
                                dict(self.available_by_node.get(n["NodeID"], total)), n["NodeID"] in self.draining))
        return out

    def listed(self, name: str, timeout: float = 0) -> str | None:
        """The Ray node id of the alive node started under sage-ops name `name`, asking Ray
        (not the cached list) until it appears or `timeout` passes."""
        import ray

        mark = f"{NODE_RESOURCE_PREFIX}{name}"
        deadline = time.monotonic() + timeout
        while True:
            found = next((n["NodeID"] for n in ray.nodes() if n.get("Alive") and mark in n.get("Resources", {})),
                         None)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.5)

    def drain(self, node_id: str, reason: str) -> None:
        """Ask Ray to lease nothing more on the node (GCS DrainNode, as Ray's autoscaler does
        before a preemption); its running tasks go on. sage-ops stops placing jobs there too."""
        import ray
        from ray.core.generated import autoscaler_pb2

        self.draining.add(node_id)
        assert self.address is not None
        accepted, why = ray._raylet.GcsClient(address=self.address).drain_node(
            node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"), reason, 0)
        if not accepted:
            raise Conflict(f"Ray refused to drain node {node_id[:12]}: {why}")

    def disconnect(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.connected = False

    # -- talking to the actor (async) --------------------------------------------------------
    async def submit(self, jobs: list[AttemptItem]) -> None:
        sent: list[SubmittedAttempt] = [{**job, "cap": self.capability(job["id"], job["attempt"])} for job in jobs]
        for job in sent:
            if package := job["spec"].get("package"):
                shipped = await self.packages.options(package["sha256"], job["spec"].get("tenant"))
                job["opts"] = {**job["opts"], **shipped}
        await self.actor.submit.remote(*self.key_args, sent)

    async def cancel(self, job_id: str, grace: float, preempt: bool = False) -> bool:
        return await self.actor.cancel.remote(*self.key_args, job_id, grace, preempt)

    async def poll(self, epoch: str, ack: int, after: int, timeout: float) -> PollReply:
        reply: PollReply = await self.actor.poll.remote(*self.key_args, epoch, ack, after, timeout)
        self.executors = reply.get("executors", 0)
        return reply

    def head_refuses(self) -> bool:
        return self.address is not None and _knock(self.address) is False

    def health(self) -> RayHealth:
        totals: dict[str, float] = {}
        for res in (n.get("Resources", {}) for n in self.nodes):
            for k, v in res.items():
                if not k.startswith("node:") and "_group_" not in k:
                    totals[k] = totals.get(k, 0) + v
        avail = {k: v for k, v in self.available.items() if k in totals}
        rec = self.head.load() if self.started_head else None
        return RayHealth(connected=self.connected, address=self.address, started_by_daemon=self.started_head,
                         dashboard=(rec or {}).get("dashboard"),
                         nodes=len(self.nodes), resources=totals, available=avail, executors=self.executors,
                         detail=self.detail)

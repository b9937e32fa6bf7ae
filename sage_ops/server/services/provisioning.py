"""The machines of the cluster: adding one (a NodeBackend bootstrap in a thread, its progress
streamed to whoever follows), draining it (no new jobs, wait for its running ones, stop its Ray),
removing it, and the node list (Ray's view joined with the nodes sage-ops added). Every change of
a node's state is checked by lifecycle.node_transition and leaves an audit row."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, select, update

from ...cluster import NodeAdd, NodeProgress, NodeView
from ...errors import Conflict, NotFound, SageOpsError
from ...lifecycle import JobStatus, NodeStatus, node_transition
from ...nodes.base import JoinPlan, NodeBackend, NodeTarget, StepFailed, StepTimeouts
from ...nodes.own_wheel import OwnWheel, own_wheel
from ..backend.transit import TRANSIT_ENV
from ..storage.tables import Job, Node
from .metrics import usage

if TYPE_CHECKING:
    from ...config import NodesConfig
    from ..backend.ray_backend import RayBackend
    from ..storage.store import Store

#: the audit's `record(actor, action, status, target, detail)`: who changed which node, and how
Audit = Callable[[Any, str, int, str, "str | None"], None]

log = logging.getLogger(__name__)
N, J = Node.__table__, Job.__table__
LOOPBACK = ("127.", "localhost", "::1")


@dataclass
class Operation:
    """One add or drain under way: its progress lines so far, and a wake-up for followers."""

    kind: str
    lines: list[NodeProgress] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: bool = False

    def post(self, line: NodeProgress) -> None:
        self.lines.append(line)
        self.done = self.done or line.step == "end"
        self.changed.set()
        self.changed = asyncio.Event()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _busy(name: str, op: Operation) -> Conflict:
    doing = {"add": "added", "drain": "drained", "stop": "cleaned up after an interrupted bootstrap"}[op.kind]
    return Conflict(f"node {name} is being {doing}; wait for it")


def _target(node: Any, known_hosts: Path | None, accept: bool = False) -> NodeTarget:
    """How to reach a node (a Node row, or the NodeAdd that is adding it)."""
    return NodeTarget(host=node.host, user=node.user, port=node.port, key_file=node.key_file,
                      known_hosts=str(known_hosts) if known_hosts else None, accept_new_host_key=accept)


class Provisioner:
    def __init__(self, cfg: NodesConfig, store: Store, ray: RayBackend, audit: Audit, state_dir: Path,
                 woken: Callable[[], None], backend: NodeBackend | None = None) -> None:
        """`woken`: a node joined or left, so the queue may move; `backend`: how nodes are
        reached (SSH unless a test says otherwise)."""
        self.cfg = cfg
        self.store = store
        self.ray = ray
        self.audit = audit
        self.state_dir = state_dir
        self.woken = woken
        self._backend = backend
        self.ops: dict[str, Operation] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def backend(self) -> NodeBackend:
        if self._backend is None:  # paramiko only when a node is touched
            from ...nodes.ssh import SSHBackend

            self._backend = SSHBackend()
        return self._backend

    # -- state changes ------------------------------------------------------------------------
    async def _set(self, name: str, old: NodeStatus | None, new: NodeStatus, detail: str | None,
                   **values: Any) -> None:
        node_transition(name, old, new)
        now = time.time()

        def op(conn: Connection) -> None:
            if old is None:
                conn.execute(N.insert().values(name=name, status=new.value, detail=detail, added_at=now,
                                               updated_at=now, **values))
            else:
                done = conn.execute(update(N).where(N.c.name == name, N.c.status == old.value)
                                    .values(status=new.value, detail=detail, updated_at=now, **values)).rowcount
                if not done:
                    raise Conflict(f"node {name} changed meanwhile; try again")

        await self.store.write(op)
        self.audit(None, f"node.{new.value.lower()}", 200, name, detail)

    async def _row(self, name: str) -> Any:
        return await self.store.read(lambda c: c.execute(select(N).where(N.c.name == name)).first())

    def _post(self, op: Operation, name: str, step: str, state: str, detail: str = "",
              node_state: NodeStatus | None = None) -> None:
        op.post(NodeProgress(node=name, step=step, state=state, detail=detail, time=_now(), node_state=node_state))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- add ----------------------------------------------------------------------------------
    async def add(self, req: NodeAdd) -> NodeView:
        name = req.node_name()
        if (op := self.ops.get(name)) is not None and not op.done:
            raise _busy(name, op)
        if not self.ray.connected:
            raise Conflict("Ray is not connected yet; try again in a moment")
        row = await self._row(name)
        old = NodeStatus(row.status) if row else None
        if row is not None and (row.host, row.port, row.user) != (req.host, req.port, req.user):
            raise Conflict(f"node {name} is {row.user + '@' if row.user else ''}{row.host}:{row.port}; "
                           f"give another --name, or remove it first")
        options = {k: v for k, v in req.model_dump().items() if k not in ("host", "user", "port", "name",
                                                                            "key_file", "accept_new_host_key")}
        await self._set(name, old, NodeStatus.JOINING, "starting", host=req.host, user=req.user, port=req.port,
                        key_file=req.key_file, backend=self.backend.kind, options=json.dumps(options))
        op = self.ops[name] = Operation("add")
        self._spawn(self._join(name, old, req, op))
        return await self.view(name)

    def own_wheel(self) -> OwnWheel:
        """This sage-ops as a wheel for the node (built once per version and source, then cached
        in the state dir): it is on no package index."""
        try:
            wheel = own_wheel(self.state_dir / "cache" / "wheels")
        except (SageOpsError, OSError) as exc:
            raise StepFailed("install", f"cannot build the sage-ops wheel for the node: {exc}") from None
        if wheel.built:
            log.info("built %s for new nodes", wheel.path)
        return wheel

    def plan(self, req: NodeAdd, name: str, wheel: OwnWheel) -> JoinPlan:
        ray_address = self.ray.address or ""
        head = self.cfg.head_address or ray_address
        if ray_address.startswith(LOOPBACK) and not req.host.startswith(LOOPBACK):
            # Ray hands out the head's own address: a machine elsewhere would reach itself
            raise StepFailed("join ray", f"the Ray head is on loopback ({ray_address}), which {req.host} cannot "
                                         "reach: set ray.node_ip to this machine's address on the node's network")
        host, _, port = head.rpartition(":")
        if host.startswith(LOOPBACK):  # a second raylet here: by host name, which Ray does not rewrite
            head = f"{socket.gethostname()}:{port}"
        env: dict[str, str] = {}
        node_ip = req.node_ip
        if req.host.startswith(LOOPBACK):  # a second raylet on this machine: stay on loopback
            node_ip = node_ip or "127.0.0.1"
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
        token = os.environ.get("RAY_AUTH_TOKEN")
        if token is None and (path := os.environ.get("RAY_AUTH_TOKEN_PATH")):
            token = Path(path).read_text().strip()
        transit_key = Path(key).read_text().strip() if (key := os.environ.get(TRANSIT_ENV)) else None
        tls_dir = None  # a TLS cluster: nodes get a certificate of the CA beside the daemon's own (nodes.tls)
        if os.environ.get("RAY_USE_TLS") == "1" and (ca := os.environ.get("RAY_TLS_CA_CERT")):
            tls_dir = Path(ca).parent
        timeouts = StepTimeouts(install=self.cfg.install_timeout, join_ray=self.cfg.join_timeout,
                                verify=self.cfg.join_timeout)
        return JoinPlan(name=name, head_address=head, ray_version=version("ray"),
                        sage_ops_version=wheel.version, sage_ops_wheel=wheel.path,
                        python=sys.version_info[:2], ray_token=token, transit_key=transit_key, tls_dir=tls_dir,
                        resources=dict(req.resources),
                        num_cpus=req.num_cpus, num_gpus=req.num_gpus,
                        wheel_dir=Path(req.wheel_dir) if req.wheel_dir else None, venv=req.venv or self.cfg.venv,
                        python_bin=req.python, node_ip=node_ip, env=env, timeouts=timeouts)

    async def _join(self, name: str, old: NodeStatus | None, req: NodeAdd, op: Operation) -> None:
        loop = asyncio.get_running_loop()

        def progress(step: str, state: str, detail: str) -> None:
            loop.call_soon_threadsafe(self._post, op, name, step, state, detail)

        target = _target(req, self.cfg.known_hosts, req.accept_new_host_key)
        started = time.monotonic()
        try:
            plan = self.plan(req, name, await asyncio.to_thread(self.own_wheel))
            result = await asyncio.to_thread(self.backend.join, target, plan, progress, self.ray.listed)
        except Exception as exc:  # noqa: BLE001 - any failure is the node's FAILED state, in one line
            detail = str(exc) if isinstance(exc, StepFailed) else f"internal error: {exc.__class__.__name__}: {exc}"
            if not isinstance(exc, StepFailed):
                log.exception("adding node %s failed", name)
            await self._set(name, NodeStatus.JOINING, NodeStatus.FAILED, detail[:500])
            self._post(op, name, "end", "fail", detail, NodeStatus.FAILED)
            return
        took = time.monotonic() - started
        detail = "already up" if result.already_joined else f"joined in {took:.1f} s"
        await self._set(name, NodeStatus.JOINING, NodeStatus.UP, detail, ray_node_id=result.ray_node_id)
        await asyncio.to_thread(self.ray.refresh_nodes)
        self.woken()  # new room: the queue may move
        self._post(op, name, "end", "done", detail, NodeStatus.UP)

    async def follow(self, name: str) -> AsyncIterator[NodeProgress]:
        """The progress of the node's current (or last) operation, from its start, live."""
        op = self.ops.get(name)
        if op is None:
            row = await self._row(name)
            if row is None:
                raise NotFound(f"no such node: {name}")
            yield NodeProgress(node=name, step="end", state="done" if row.status != "FAILED" else "fail",
                               detail=row.detail or "", time=_now(), node_state=NodeStatus(row.status))
            return
        sent = 0
        while True:
            waiter = op.changed
            while sent < len(op.lines):
                sent += 1
                yield op.lines[sent - 1]
            if op.done:
                return
            await waiter.wait()

    # -- drain and remove ---------------------------------------------------------------------
    async def drain(self, name: str, force: bool) -> NodeView:
        row = await self._row(name)
        if row is None:
            raise self._unmanaged(name)
        status = NodeStatus(row.status)
        if status is NodeStatus.DRAINED or (status is NodeStatus.DRAINING and name in self.ops
                                            and not self.ops[name].done):
            return await self.view(name)  # already (being) drained
        if status is not NodeStatus.DRAINING:
            await self._set(name, status, NodeStatus.DRAINING, "no new jobs" + (" (forced)" if force else ""))
        op = self.ops[name] = Operation("drain")
        self._spawn(self._drain(row, force, op))
        return await self.view(name)

    async def _drain(self, row: Any, force: bool, op: Operation) -> None:
        name = row.name
        try:
            self._post(op, name, "drain", "start", "telling Ray to place nothing more there")
            ray_id = await self._listed(name)
            if ray_id is not None:
                await asyncio.to_thread(self.ray.drain, ray_id, f"sage-ops nodes drain {name}")
            self._post(op, name, "drain", "done", "draining" if ray_id else "not in Ray")
            if not force:
                shown = -1
                while running := await self.running_on(name):
                    if running != shown:
                        shown = running
                        self._post(op, name, "wait jobs", "start", f"{running} running job(s)")
                    await asyncio.sleep(1)
                self._post(op, name, "wait jobs", "done", "no running jobs")
            self._post(op, name, "stop ray", "start", "")
            stopped = await asyncio.to_thread(self.backend.stop, _target(row, self.cfg.known_hosts),
                                              name, StepTimeouts().stop)
            self._post(op, name, "stop ray", "done", f"{stopped} process(es) stopped")
        except Exception as exc:  # noqa: BLE001 - stays DRAINING; drain again or remove --force
            detail = str(exc) if isinstance(exc, StepFailed) else f"{exc.__class__.__name__}: {exc}"
            await self.store.write(lambda c: c.execute(update(N).where(N.c.name == name)
                                                              .values(detail=f"drain failed: {detail}"[:500])))
            self._post(op, name, "end", "fail", detail, NodeStatus.DRAINING)
            return
        await self._set(name, NodeStatus.DRAINING, NodeStatus.DRAINED, "Ray stopped; `nodes remove` forgets it")
        await asyncio.to_thread(self.ray.refresh_nodes)
        self._post(op, name, "end", "done", "drained", NodeStatus.DRAINED)

    async def _listed(self, name: str) -> str | None:
        if not self.ray.connected:
            return None
        return await asyncio.to_thread(self.ray.listed, name, 0)

    async def running_on(self, name: str) -> int:
        q = select(func.count()).select_from(J).where(J.c.status == JobStatus.RUNNING.value, J.c.node == name)
        return int(await self.store.read(lambda c: c.execute(q).scalar() or 0))

    async def remove(self, name: str, force: bool) -> dict[str, Any]:
        row = await self._row(name)
        if row is None:
            raise self._unmanaged(name)
        status = NodeStatus(row.status)
        if (op := self.ops.get(name)) is not None and not op.done:
            raise _busy(name, op)
        if status in (NodeStatus.UP, NodeStatus.DRAINING, NodeStatus.JOINING):
            if not force:
                raise Conflict(f"node {name} is {status.value}: drain it first (sage-ops nodes drain {name}), "
                               f"or remove it with --force")
            ray_id = await self._listed(name)
            if ray_id is not None:
                await asyncio.to_thread(self.ray.drain, ray_id, f"sage-ops nodes remove --force {name}")
                try:
                    await asyncio.to_thread(self.backend.stop, _target(row, self.cfg.known_hosts),
                                            name, StepTimeouts().stop)
                except StepFailed as exc:
                    raise Conflict(f"could not stop Ray on node {name}: {exc}") from None
        await self.store.write(lambda c: c.execute(delete(N).where(N.c.name == name)))
        self.audit(None, "node.removed", 200, name, f"was {status.value}")
        self.ops.pop(name, None)
        await asyncio.to_thread(self.ray.refresh_nodes)
        return {"removed": name, "was": status.value}

    def _unmanaged(self, name: str) -> Exception:
        if any(n.name == name for n in self.ray.node_infos()):
            return Conflict(f"node {name} was not added by sage-ops; stop Ray on that machine yourself")
        return NotFound(f"no such node: {name}")

    # -- reading ------------------------------------------------------------------------------
    async def nodes(self) -> list[NodeView]:
        rows = await self.store.read(lambda c: c.execute(select(N).order_by(N.c.name)).all())
        running = await self.store.read(lambda c: dict(c.execute(
            select(J.c.node, func.count()).where(J.c.status == JobStatus.RUNNING.value).group_by(J.c.node)).all()))
        infos = self.ray.node_infos() if self.ray.connected else []
        _, per = usage(infos)
        by_name = {i.name: i for i in infos}
        views: list[NodeView] = []
        for row in rows:
            info = by_name.pop(row.name, None)
            state = "DOWN" if row.status == NodeStatus.UP.value and info is None else row.status
            views.append(self._view(row.name, state, True, info, per, running, row))
        for info in by_name.values():
            views.append(self._view(info.name, "UP", False, info, per, running, None))
        views.sort(key=lambda v: (not v.head, v.name))
        return views

    def _view(self, name: str, state: str, managed: bool, info: Any, per: dict[str, Any],
              running: dict[str | None, int], row: Any) -> NodeView:
        seen = self.ray.last_seen.get(name)
        extra: dict[str, Any] = {}
        if row is not None:
            opts = json.loads(row.options or "{}")
            extra = {"host": row.host, "user": row.user, "port": row.port, "detail": row.detail,
                     "added_at": datetime.fromtimestamp(row.added_at, timezone.utc),
                     "resources": opts.get("resources", {}), "ray_node_id": row.ray_node_id}
        if info is not None:
            custom = {k: v for k, v in info.total.items() if not k.startswith(("node:", "sage_ops_node:"))
                      and k not in ("CPU", "GPU", "memory", "object_store_memory")}
            extra.update(address=info.address, ray_node_id=info.ray_id, head=info.head, resources=custom)
            if info.draining and state == "UP":
                state = "DRAINING"
        usage_now = per[name].model_dump() if name in per else {}
        return NodeView(name=name, state=state, managed=managed, running_jobs=running.get(name, 0),
                        heartbeat_age_s=round(time.time() - seen, 1) if seen else None, **usage_now, **extra)

    async def view(self, name: str) -> NodeView:
        found = next((v for v in await self.nodes() if v.name == name), None)
        if found is None:
            raise NotFound(f"no such node: {name}")
        return found

    async def resume(self) -> None:
        """At start-up (or as a new leader): a bootstrap the last daemon was running is gone with
        it. If Ray lists the node, it had joined: UP. Otherwise it is FAILED and whatever of it
        was started on the machine is stopped, so no half-joined node joins later unseen. A drain
        goes on."""
        rows = await self.store.read(lambda c: c.execute(select(N).where(
            N.c.status.in_([NodeStatus.JOINING.value, NodeStatus.DRAINING.value]))).all())
        for row in rows:
            if row.name in self.ops and not self.ops[row.name].done:
                continue  # this daemon's own operation, still going
            if row.status == NodeStatus.DRAINING.value:
                op = self.ops[row.name] = Operation("drain")
                self._spawn(self._drain(row, False, op))
            elif (ray_id := await self._listed(row.name)) is not None:
                await self._set(row.name, NodeStatus.JOINING, NodeStatus.UP,
                                "joined (the daemon restarted during its bootstrap)", ray_node_id=ray_id)
            else:
                await self._set(row.name, NodeStatus.JOINING, NodeStatus.FAILED,
                                "interrupted: the daemon stopped during the bootstrap; add the node again")
                op = self.ops[row.name] = Operation("stop")
                self._spawn(self._stop_left(row, op))

    async def _stop_left(self, row: Any, op: Operation) -> None:
        """Best effort: stop what an interrupted bootstrap started on the node."""
        try:
            stopped = await asyncio.to_thread(self.backend.stop, _target(row, self.cfg.known_hosts),
                                              row.name, StepTimeouts().stop)
            self._post(op, row.name, "end", "done", f"{stopped} process(es) left by the bootstrap stopped",
                       NodeStatus.FAILED)
        except Exception as exc:  # noqa: BLE001 - the machine may be gone; adding it again stops them too
            log.warning("node %s: could not stop what its interrupted bootstrap left: %s", row.name, exc)
            self._post(op, row.name, "end", "fail", f"could not stop what the bootstrap left: {exc}",
                       NodeStatus.FAILED)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()


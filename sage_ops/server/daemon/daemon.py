"""JobManagerServer and the Daemon it runs: the parts wired once, the listeners (Unix 0600,
optional TCP with a token, optionally TLS), the Ray connection in the background, signals, and an
orderly shutdown that leaves jobs running. The process's own set-up (log, pidfile lock, owner-only
files, binding the sockets) is process.py."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from ... import paths
from ...access import Role
from ...config import Config, load_config
from ...errors import Conflict, DaemonUnavailable, SageOpsError
from ...exposure import loopback_for, plaintext_exposure
from ...web.api import InProcess
from ...web.pages import Dashboard
from ..access.auth import AuditLog, Denials, Gate, Identities, RateLimiter, digest_of
from ..backend import ray_join
from ..backend.ray_backend import RayBackend
from ..http.api import create_app
from ..http.services import Listening, Services
from ..http.site import Site
from ..pools.autoscaler import Autoscaler, PoolEvent
from ..pools.provisioned import ProvisionedActions
from ..scheduling.run_as import RunAs
from ..scheduling.scheduler import Scheduler
from ..services.event_stream import EventHub
from ..services.leadership import Leadership
from ..services.metrics import Sampler
from ..services.provisioning import Provisioner
from ..services.retention import Retention
from ..storage import accounts
from ..storage import store as st
from ..storage.blobs import BlobStore
from ..storage.logs import LogStore
from ..storage.pool_hosts import StoredPoolHosts
from ..storage.results import ResultStore
from ..storage.sealing import Sealer
from .connections import Guard, guarded, open_files_limit, tcp_cap
from .process import PidLock, QuietRay, bind_tcp, bind_unix, local_admin_token, owner_only, setup_logging

DISPATCHER_ACTOR = "dispatcher_actor"  # Meta key: the id of the dispatcher actor we made
log = logging.getLogger("sage_ops")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


class Daemon:
    """One running daemon: the pieces and their wiring."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.state_dir = paths.state_dir()
        self.listening = Listening(Path(cfg.jobmanager.socket), time.time())
        self.store = st.Store(cfg.database.url, cfg.database.synchronous)
        #: the store of jobs' files every daemon of the database shares (storage.url; else storage.path)
        self.blobs = BlobStore(cfg.storage.blobs_url(), cfg.storage.options)
        self.logs = LogStore(Path(cfg.storage.path) / "logs", self.blobs if cfg.storage.url else None)
        self.backend = RayBackend(cfg.ray, self.state_dir, instance=self.store.instance,
                                  sealer=Sealer(cfg.security.secret_key_file), blobs=self.blobs)
        self.results = ResultStore(self.blobs, cfg.storage.inline_result_bytes)
        self.scheduler = Scheduler(cfg, self.store, self.backend, self.logs,  # for the process's life
                                   results=self.results)
        self.scheduler.on_ray_lost = self._ray_lost
        self.leadership = Leadership(self.store, cfg.jobmanager.heartbeat_interval, None, self._elected,
                                     self._deposed)
        self.logs.lead(self.leadership.is_leader)  # a standby reads what the leader uploads
        self.identities = Identities(self.store)
        sec = cfg.security
        self.run_as = RunAs(sec.switch_users, sec.sandbox)
        self.audit = AuditLog(self.store, self.identities, sec.audit_retention_days * 86400)
        self.denials = Denials(self.audit, sec.denial_audit_interval)
        self.limiter = RateLimiter(sec.rate_limit, sec.rate_burst)
        self.provisioner = Provisioner(cfg.nodes, self.store, self.backend, self.audit.record, self.state_dir,
                                       self.scheduler.wake_up)
        #: the elastic pools' autoscaler (nodes.pools); it runs only while this daemon leads
        self.autoscaler = Autoscaler(cfg.nodes.pools, ProvisionedActions(self.provisioner), self.scheduler.demand,
                                     time.time, self._pool_event, StoredPoolHosts(self.store)) \
            if cfg.nodes.pools else None
        self.sampler = Sampler(cfg.metrics, self.scheduler, self.backend, self.leadership, self.store)
        self.retention = Retention(self.store, self.logs, self.leadership, cfg.jobmanager.retention,
                                   cfg.jobmanager.retention_batch, results=self.results,
                                   blobs=self.blobs)  # the leader's
        self.events = EventHub(self.store)
        self._stop = asyncio.Event()
        self.fatal: SageOpsError | None = None  # why the daemon stopped by itself (a Ray cluster refused)
        self._connecting: asyncio.Task[None] | None = None
        self._scaling: asyncio.Task[None] | None = None  # the pools' autoscaler, while this daemon leads
        self.restart = False  # set when the daemon must start over as a new process

    async def _elected(self) -> None:
        """This daemon leads: load the queue, then (in the background) reach Ray and resume."""
        self.logs.lead(True)
        await self.scheduler.begin_term()
        self._connecting = asyncio.create_task(self._connect_ray())

    async def _ray_lost(self) -> None:
        """The dispatcher stayed unreachable (the head died or restarted). A Ray driver cannot
        be trusted to outlive its cluster in-process, so the daemon starts over as a fresh
        process (same command, same sockets): it reconnects — or starts a new local head — and
        recovers from the database as after any restart; the attempts Ray lost are failed
        attempts, retried by policy. Clients see a short gap, which they retry through."""
        log.error("lost the Ray cluster at %s; restarting the daemon to reconnect", self.backend.address)
        self.restart = True
        self._stop.set()

    def _scale(self) -> None:
        """The leader keeps its elastic pools (nodes.pools) as their rules say, once Ray is there."""
        if self.autoscaler is None or (self._scaling is not None and not self._scaling.done()):
            return
        self._scaling = asyncio.create_task(self.autoscaler.run())

    def _pool_event(self, event: PoolEvent) -> None:
        """A pool's decision, audited (`sage-ops audit`) and logged."""
        target = f"{event.pool}/{event.host}" if event.host else event.pool
        self.audit.record(None, f"pool.{event.kind}", 200, target, event.reason)
        log.info("pool %s: %s%s: %s", event.pool, event.kind, f" {event.host}" if event.host else "", event.reason)

    async def _deposed(self) -> None:
        """Another daemon leads now: stop scheduling at once (our writes are fenced off anyway)."""
        if self._scaling is not None:
            self._scaling.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
        self.logs.lead(False)
        await self.scheduler.end_term()

    async def _connect_backend(self) -> None:
        """Connect to Ray and the dispatcher actor this database recorded (by id: an impostor
        under its name is never called), recording a new one."""
        known = await self.store.read(lambda c: st.get_meta(c, DISPATCHER_ACTOR))
        self.backend.known_actor = known
        await _in_daemon_thread(self.backend.connect)
        if self.backend.actor_id and self.backend.actor_id != known:
            actor_id = self.backend.actor_id
            await self.store.write(lambda c: st.set_meta(c, DISPATCHER_ACTOR, actor_id))

    async def _connect_ray(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                if not self.backend.connected:
                    await self._connect_backend()
                await self.scheduler.recover()
                await self.provisioner.resume()
                await self.scheduler.run()
                self._scale()
                return
            except ray_join.Refused as exc:  # not a cluster to join: retrying cannot help
                log.error("%s", exc.message)
                self.fatal = exc
                self._stop.set()
                return
            except Exception as exc:  # noqa: BLE001 - keep serving; report in health, retry
                msg = getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"
                log.error("Ray is not available: %s", msg)
                self.backend.detail = msg.splitlines()[0][:300]
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    async def serve(self) -> None:
        sec, jm = self.cfg.security, self.cfg.jobmanager
        services = Services(results=self.results, retention=self.retention,
                            cfg=self.cfg, store=self.store, scheduler=self.scheduler, logs=self.logs,
                            events=self.events, run_as=self.run_as, identities=self.identities, audit=self.audit,
                            ray=self.backend, leadership=self.leadership, provisioner=self.provisioner,
                            listening=self.listening, pools=self.autoscaler, blobs=self.blobs)
        api = Gate(create_app(services), self.identities, self.limiter, self.audit, sec, self.denials)
        app = Site(api, Dashboard(InProcess(api), self.backend.sealer.derive(b"web session"),
                                  secure=bool(sec.tls_cert)))
        common = {"lifespan": "off", "access_log": False, "log_level": "warning", "timeout_graceful_shutdown": 3,
                  "timeout_keep_alive": jm.idle_timeout}
        unix = Guard("unix socket", None, None, jm.header_timeout)  # local users: no cap, a head deadline
        servers = [_Server(uvicorn.Config(app, http=guarded(unix), **common))]
        sockets = [[bind_unix(self.listening.socket, int(sec.socket_mode, 8))]]
        files = open_files_limit()
        if jm.host:
            digest = digest_of(local_admin_token())
            await self.store.write(lambda c: accounts.ensure_token(c, "local-admin", digest, Role.ADMIN),
                                   fenced=False)
            tcp = bind_tcp(self.cfg.jobmanager.host, self.cfg.jobmanager.port)
            host, port = tcp.getsockname()[:2]
            self.listening.tcp = f"{host}:{port}"
            tls = {"ssl_certfile": str(sec.tls_cert), "ssl_keyfile": str(sec.tls_key)} if sec.tls_cert else {}
            cap = tcp_cap(jm.max_connections, files)
            if cap < jm.max_connections:
                log.warning("TCP connections capped at %d (half of %d open files; jobmanager.max_connections "
                            "is %d): raise LimitNOFILE to allow more", cap, files, jm.max_connections)
            guard = Guard("tcp", cap, jm.max_connections_per_ip, jm.header_timeout)
            servers.append(_Server(uvicorn.Config(app, http=guarded(guard), **common, **tls)))
            sockets.append([tcp])
        await self.identities.refresh()
        refreshing = asyncio.create_task(self.identities.run())
        sampling = asyncio.create_task(self.sampler.run())
        retaining = asyncio.create_task(self.retention.run())
        tailing = asyncio.create_task(self.events.run())
        uploading = asyncio.create_task(self.logs.uploading(self.cfg.storage.flush_interval))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        if self.listening.tcp:
            host, port = self.listening.tcp.rsplit(":", 1)
            shown = socket.gethostname() if host in ("0.0.0.0", "::") else host  # noqa: S104
            self.leadership.address = f"{shown}:{port}"
        if not self.leadership.shared:
            await self.leadership.run()  # SQLite: this daemon leads; load before serving
        leading = asyncio.create_task(self.leadership.run()) if self.leadership.shared else None
        serving = [asyncio.create_task(s.serve(sockets=socks)) for s, socks in zip(servers, sockets)]
        log.info("daemon %d serving on %s%s (%s)", os.getpid(), self.listening.socket,
                 f" and tcp {self.listening.tcp}" if self.listening.tcp else "", self.leadership.role)
        await self._stop.wait()
        log.info("shutting down (running jobs keep running in Ray)")
        refreshing.cancel()
        sampling.cancel()
        retaining.cancel()
        tailing.cancel()
        if self._scaling is not None:
            self._scaling.cancel()
        await self.provisioner.stop()
        if leading is not None:
            leading.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*serving, return_exceptions=True)
        self.denials.close()
        if self.audit.pending:
            await self.audit.flush()
        await self.scheduler.stop()
        uploading.cancel()
        await asyncio.to_thread(self.logs.flush)  # the last lines, before another daemon leads
        await self.leadership.resign()
        self.store.close()
        if self.backend.connected:
            await _in_daemon_thread(self.backend.disconnect)
        with contextlib.suppress(FileNotFoundError):
            self.listening.socket.unlink()


async def _in_daemon_thread(fn: Any) -> Any:
    """Like to_thread, but a call stuck in Ray (an unreachable head) never blocks the exit."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def run() -> None:
        try:
            res = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            err = exc
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_exception(err))
        else:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(res))

    threading.Thread(target=run, daemon=True, name=f"sage-ops-{fn.__name__}").start()
    return await fut


_last_error: list[SageOpsError] = []  # the last error start() raised, shown in one line if uncaught


def one_line_if_uncaught(exc: SageOpsError) -> None:
    """Should `exc` end the program uncaught, print `sage-ops daemon: <message>` (as the daemon's
    own command does) instead of a traceback; any other exception is shown as before, and a
    caller that catches `exc` sees no difference. The hook is installed once."""
    if not _last_error:
        shown = sys.excepthook

        def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
            if _last_error and value is _last_error[0]:
                print(f"sage-ops daemon: {_last_error[0].message}", file=sys.stderr)
            else:
                shown(kind, value, tb)

        sys.excepthook = hook
    _last_error[:] = [exc]


class JobManagerServer:
    """The Python entry point, with the names from the JobManager docs.

    `JobManagerServer(host="0.0.0.0", port=19001, ray_address="auto").start()` serves until
    SIGTERM/SIGINT. `host=None` keeps TCP off (Unix socket only). The docs' values are accepted
    and kept safe: TCP always needs a token, a host beyond loopback serves the network only over TLS
    (else loopback), `auto` is this daemon's own head, and Ray's dashboard stays on loopback.
    """

    WILDCARD = ("0.0.0.0", "::")  # noqa: S104 - recognised in order to narrow it

    def __init__(self, host: str | None = None, port: int | None = None, ray_address: str | None = None,
                 config: Config | str | None = None, socket_path: str | None = None, **overrides: Any) -> None:
        if isinstance(config, Config):
            cfg = config
        else:
            cfg = load_config(config, **{"jobmanager.host": host, "jobmanager.port": port,
                                         "ray.address": ray_address, "jobmanager.socket": socket_path,
                                         **overrides})
        self.notes: list[str] = []
        self.cfg = self._narrowed(cfg)

    def _narrowed(self, cfg: Config) -> Config:
        """A host beyond loopback without TLS becomes loopback (a bearer token must not cross a
        network in clear: exposure.plaintext_exposure, the rule `daemon start` refuses by), unless
        security.insecure_plaintext; a wildcard dashboard too (Ray's has no authentication of
        ours). Each with a note."""
        jm, ray = cfg.jobmanager, cfg.ray
        if plaintext_exposure(jm.host, bool(cfg.security.tls_cert)) and not cfg.security.insecure_plaintext:
            self.notes.append(f"TCP on {loopback_for(jm.host)}:{jm.port} only: serving {jm.host} needs TLS "
                              "(security.tls_cert and tls_key, or --tls-cert/--tls-key)")
            jm = jm.model_copy(update={"host": loopback_for(jm.host)})
        if ray.dashboard_host in self.WILDCARD:
            self.notes.append("Ray's dashboard on 127.0.0.1 only: it would let anyone on the network run code")
            ray = ray.model_copy(update={"dashboard_host": "127.0.0.1"})
        return cfg.model_copy(update={"jobmanager": jm, "ray": ray})

    def start(self) -> None:
        """Serve in this thread until SIGTERM/SIGINT. Raises Conflict (one clear line) when a
        daemon already runs for this state directory, before touching its log or Ray. Any
        SageOpsError it raises that ends the program uncaught (a script whose last call is this
        one) is shown as `python -m sage_ops.server` shows it: one line, no traceback."""
        try:
            self._serve()
        except SageOpsError as exc:
            one_line_if_uncaught(exc)
            raise

    def _serve(self) -> None:
        lock = PidLock(paths.pidfile())
        old_umask = os.umask(0o077)  # every file and directory the daemon makes is owner-only
        try:
            lock.acquire()
        except Conflict as exc:
            os.umask(old_umask)  # an embedding program gets its process back as it was
            raise Conflict(f"{exc.message}: connect to it (JobManagerClient()), or stop it first "
                           "(sage-ops daemon stop)") from None
        try:
            state, storage = paths.state_dir(), Path(self.cfg.storage.path)
            owner_only(state, state / "daemon.out", storage, storage / "logs")  # daemon.out: `daemon start`'s
            setup_logging(self.cfg)
            for note in self.notes:
                log.warning("%s", note)
                if not self.cfg.logging.stderr:
                    print(f"sage-ops daemon: {note}", file=sys.stderr)
            logging.getLogger("ray._private.worker").addFilter(QuietRay())
            try:
                import uvloop

                runner: Any = uvloop.run
            except ImportError:
                runner = asyncio.run
            daemon = Daemon(self.cfg)
            daemon.blobs.check()  # a store it cannot use (no bucket, no credentials) stops it here, in one line
            try:
                runner(daemon.serve())
            except OSError as exc:  # the TCP port is taken, or the host is not an address of this machine
                jm = self.cfg.jobmanager
                if not jm.host or exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    raise
                raise DaemonUnavailable(f"cannot listen on {jm.host}:{jm.port}: {exc.strerror}") from None
        finally:
            lock.release()
            os.umask(old_umask)
        if daemon.fatal is not None:
            raise daemon.fatal
        if daemon.restart and "sage_ops.server" in sys.orig_argv:  # the daemon's own command
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
        if daemon.restart:
            raise DaemonUnavailable("lost the Ray cluster; start the server again to reconnect")

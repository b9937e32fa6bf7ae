"""Checks of the service: the daemon behind the address the CLI would use, and its database."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .. import __version__, paths, rayhead
from ..client import JobManagerClient
from ..config import Config, redact_url
from ..errors import DaemonUnavailable, SageOpsError
from ..transport import parse_addresses
from .base import (
    CONNECT_TIMEOUT,
    HEALTH_TIMEOUT,
    Check,
    Probe,
    Status,
    bad,
    existing,
    free_space,
    ok,
    size,
    verdict,
    worst,
)


# -- daemon --------------------------------------------------------------------------------------
def _socket_mode(path: Path, cfg: Config) -> tuple[Status, str, str | None]:
    """The socket file's mode against security.socket_mode (0600 unless configured otherwise)."""
    st = path.stat()
    mode, want = stat.S_IMODE(st.st_mode), int(cfg.security.socket_mode, 8)
    if mode != want:
        return "WARN", f"socket mode {mode:04o}, expected {want:04o} (security.socket_mode)", \
            f"chmod {want:03o} {path}"
    return "OK", f"mode {mode:04o}", None


def _unreachable_unix(path: Path, cfg: Config) -> Check:
    """Why a Unix socket does not answer: absent, not a socket, stale, forbidden or hung."""
    if not path.exists():
        return bad("daemon", "FAIL", f"daemon not running: no socket at {path}", "sage-ops daemon start")
    if not stat.S_ISSOCK(path.stat().st_mode):
        return bad("daemon", "FAIL", f"{path} exists but is not a socket",
                    f"mv {path} {path}.bak && sage-ops daemon start")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(str(path))
    except ConnectionRefusedError:
        return bad("daemon", "FAIL", f"stale socket {path}: nobody is listening (the daemon exited without "
                    "removing it)", "sage-ops daemon start  (it replaces the stale socket)")
    except PermissionError:
        st = path.stat()
        return bad("daemon", "FAIL", f"permission denied on {path} (owner uid {st.st_uid}, mode "
                    f"{stat.S_IMODE(st.st_mode):04o})", f"run as uid {st.st_uid}, or have its owner set "
                    "security.socket_mode: '0660' and add you to the socket's group")
    except OSError as exc:
        return bad("daemon", "FAIL", f"cannot connect to {path}: {exc.strerror or exc}",
                    "sage-ops daemon stop; sage-ops daemon start")
    finally:
        sock.close()
    return bad("daemon", "FAIL", f"a process listens on {path} but did not answer /v1/health within "
                f"{HEALTH_TIMEOUT:g}s (busy or hung)",
                f"sage-ops daemon stop && sage-ops daemon start  (log: {cfg.logging.file})")


def check_daemon(p: Probe) -> Check:
    """The address the CLI would use, its socket file, and whether the daemon answers in time."""
    cfg = p.cfg
    raw, source = p.ctx.target(cfg)
    try:
        addresses = parse_addresses(raw)
    except SageOpsError as exc:
        return bad("daemon", "FAIL", f"{source}: {exc.message}",
                    "use --address unix:///path.sock or HOST:PORT (or fix $SAGE_OPS_ADDRESS)")
    first = addresses[0]
    p.local = first.kind == "unix"
    path = Path(first.target) if first.kind == "unix" else None
    if path is not None and len(str(path).encode()) > 107:
        return bad("daemon", "FAIL", f"socket path too long for a Unix socket ({len(str(path))} bytes): {path}",
                    "set jobmanager.socket to a shorter path (or export XDG_RUNTIME_DIR=/run/user/$(id -u))")
    client = JobManagerClient(raw, config={"retry_attempts": 1, "timeout": HEALTH_TIMEOUT, "failover_timeout": 0,
                                           "ca": p.ctx.ca, "insecure": p.ctx.insecure}, token=p.ctx.token)
    try:
        health = client.health_check()
    except DaemonUnavailable as exc:
        if path is not None:
            return _unreachable_unix(path, cfg)
        return bad("daemon", "FAIL", f"daemon not reachable at {raw} ({source}): {exc.message.split(' — ')[0]}",
                    "sage-ops daemon start --tcp HOST:PORT  (on that host), or fix --address / $SAGE_OPS_ADDRESS")
    except SageOpsError as exc:
        return bad("daemon", "FAIL", f"the daemon at {raw} refused the health check: {exc.message}",
                    "give a valid token: sage-ops --token TOKEN doctor  (or export SAGE_OPS_TOKEN=...)")
    finally:
        client.close()
    p.health = health
    statuses: list[Status] = ["OK"]
    parts = [f"up at {first} ({source}): {health.role}, version {health.version}, pid {health.pid}"]
    fixes: list[str] = []
    if path is not None and path.exists():
        status, note, fix = _socket_mode(path, cfg)
        statuses.append(status)
        parts.append(note)
        if fix:
            fixes.append(fix)
    if health.version != __version__:
        statuses.append("WARN")
        parts.append(f"this CLI is {__version__}")
        fixes.append("sage-ops daemon stop && sage-ops daemon start  (runs the installed version)")
    if health.role != "standby" and not health.ray.connected:
        statuses.append("WARN")
        parts.append(f"ray not connected{': ' + health.ray.detail if health.ray.detail else ''}")
        fixes.append(f"check ray.address ({cfg.ray.address}) with `ray status`, then sage-ops daemon stop && "
                     "sage-ops daemon start")
    elif health.ray.connected:
        parts.append(f"ray {health.ray.address} ({health.ray.nodes} node{'s' if health.ray.nodes != 1 else ''})")
    if health.status != "ok" and not fixes:
        statuses.append("WARN")
        parts.append("degraded")
        fixes.append(f"sage-ops health  (says what is down; log: {cfg.logging.file})")
    return verdict("daemon", statuses, parts, fixes)


# -- the local Ray head ---------------------------------------------------------------------------
def check_ray_head(p: Probe) -> Check:
    """The Ray head the daemon of this state dir started. It outlives the daemon on purpose (the
    jobs on it keep running), but with no daemon left it only holds memory: say how to stop it."""
    head = rayhead.find(paths.state_dir())
    if not head.running:
        return ok("ray-head", "no Ray head of this state dir is running")
    used, kind = head.memory
    what = f"at {head.address or '(address unknown)'}: {len(head.pids)} processes, {size(used)} ({kind})"
    pid = rayhead.daemon_pid(paths.pidfile())
    if pid is None:
        return bad("ray-head", "WARN", f"left behind: the Ray head of this state dir runs {what} while no daemon "
                   "runs", "sage-ops daemon stop --ray  (or sage-ops daemon start, to use it again)")
    h = p.health
    if h is not None and h.pid == pid and h.ray.connected and h.ray.address != head.address:
        return bad("ray-head", "WARN", f"unused: the daemon is on Ray at {h.ray.address}, while the Ray head of "
                   f"this state dir runs {what}", "sage-ops daemon stop --ray && sage-ops daemon start")
    return ok("ray-head", f"the daemon's Ray head {what}")


# -- database ------------------------------------------------------------------------------------
def _sqlite_path(url: str) -> Path | None:
    """sqlite:///relative.db, sqlite:////abs.db -> the file; None for in-memory."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    rest = rest.split("?", 1)[0]
    rest = rest[1:] if rest.startswith("/") else rest
    if not rest or rest == ":memory:":
        return None
    return Path(rest).expanduser().absolute()


def _sqlite(path: Path) -> tuple[Status, str, str | None]:
    """The SQLite file and its directory: SQLite writes journal files next to the database, so the
    directory must be writable too."""
    statuses: list[Status] = ["OK"]
    fixes: list[str] = []
    parts = [f"sqlite {path}"]
    folder = path.parent
    if not folder.exists():
        base = existing(folder)
        if os.access(base, os.W_OK | os.X_OK):
            parts.append("its directory is created on start")
        else:
            statuses.append("FAIL")
            parts.append(f"{folder} does not exist and {base} is not writable")
            fixes.append(f"sudo mkdir -p {folder} && sudo chown $(id -u) {folder}")
    elif not os.access(folder, os.W_OK | os.X_OK):
        statuses.append("FAIL")
        parts.append(f"directory {folder} is not writable")
        fixes.append(f"chmod u+rwx {folder}  (or sudo chown $(id -u) {folder})")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            statuses.append("FAIL")
            parts.append("file not readable/writable")
            fixes.append(f"chmod u+rw {path}  (or sudo chown $(id -u) {path})")
        elif path.is_file() and path.stat().st_size >= 16:
            with open(path, "rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    statuses.append("FAIL")
                    parts.append("not an SQLite database")
                    fixes.append(f"mv {path} {path}.bad  (the daemon creates a new one)")
        parts.append(size(path.stat().st_size))
    else:
        parts.append("not created yet")
    parts.append(free_space(statuses, folder, fixes))
    status = worst(*statuses)
    return status, ", ".join(parts), "; ".join(fixes) or None


def _tcp_reachable(host: str, port: int) -> str | None:
    """None if host:port (or a libpq socket directory) accepts a connection, else why not."""
    if host.startswith("/"):
        target = Path(host) / f".s.PGSQL.{port}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(str(target))
        except OSError as exc:
            return f"{target}: {exc.strerror or exc.__class__.__name__}"
        finally:
            sock.close()
        return None
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc.__class__.__name__}"
    return None


def _postgres(url: str) -> tuple[Status, str, str | None]:
    """Without the daemon only the network path can be tested (no driver in the CLI)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or ["localhost"])[0]
    port = parts.port or int((query.get("port") or ["5432"])[0])
    db = parts.path.lstrip("/") or "(default database)"
    why = _tcp_reachable(host, port)
    where = f"postgresql {host}:{port}/{db}"
    if why:
        return "FAIL", f"{where}: cannot connect ({why})", \
            f"start PostgreSQL or fix database.url; test with: pg_isready -h {host} -p {port}"
    return "OK", f"{where} accepts connections (daemon down: login and schema not checked)", None


def check_database(p: Probe) -> Check:
    """The daemon's own view when it answers; otherwise what can be checked from here."""
    h = p.health
    url = str(h.database.get("url") or p.cfg.database.url) if h else p.cfg.database.url
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    statuses: list[Status] = ["OK"]
    parts: list[str] = []
    fixes: list[str] = []
    if h is not None:
        db = h.database
        if db.get("ok"):
            latency = f", {db['latency_ms']} ms" if "latency_ms" in db else ""
            parts.append(f"daemon: ok{latency}")
        else:
            statuses.append("FAIL")
            parts.append(f"daemon: down ({db.get('detail') or 'no detail'})")
            fixes.append(f"sage-ops health; see {p.cfg.logging.file}")
    if scheme == "sqlite" and (h is None or p.local):
        path = _sqlite_path(url)
        if path is None:
            parts.insert(0, "sqlite in memory (nothing survives a restart)")
            statuses.append("WARN")
            fixes.append("set database.url to a file: sqlite:////path/to/sage-ops.db")
        else:
            status, detail, fix = _sqlite(path)
            statuses.append(status)
            parts.insert(0, detail)
            if fix:
                fixes.append(fix)
    elif scheme in ("postgresql", "postgres") and h is None:
        status, detail, fix = _postgres(url)
        statuses.append(status)
        parts.insert(0, detail)
        if fix:
            fixes.append(fix)
    elif h is not None:
        parts.insert(0, redact_url(url))
    else:
        statuses.append("WARN")
        parts.insert(0, f"{redact_url(url)}: cannot check a {scheme} database while the daemon is down")
        fixes.append("sage-ops daemon start, then sage-ops doctor")
    return verdict("database", statuses, parts, fixes)

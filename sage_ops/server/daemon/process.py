"""What the daemon sets up in its own process and on its host, apart from the parts it wires
(daemon.py): its log file and format, the files it makes owner-only, the pidfile lock that keeps
one daemon per state directory, and the sockets it listens on. Changing where or how the daemon
writes, locks or binds happens here; what it builds and starts, in daemon.py."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import logging.handlers
import os
import socket
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path

from ... import paths
from ...config import Config
from ...errors import Conflict, DaemonUnavailable
from ..access.auth import new_token


class _Text(logging.Formatter):
    """`2026-11-24T21:00:00.123Z INFO sage_ops.server.scheduling.scheduler: message`: UTC, one line per record
    (a traceback's lines are indented under it), so grep and `daemon logs` see whole records."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        t = datetime.fromtimestamp(record.created, timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\n    ")


class _Json(_Text):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(cfg: Config) -> None:
    """The daemon's log: level, file, size rotation and format from the config (`logging:`)."""
    lc = cfg.logging
    paths.ensure_dir(lc.file.parent)
    fmt = _Json() if lc.format == "json" else _Text("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.handlers.RotatingFileHandler(
        lc.file, maxBytes=lc.max_bytes, backupCount=lc.backups, encoding="utf-8")]
    if lc.stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    owner_only(lc.file)
    for h in handlers:
        h.setFormatter(fmt)
    root = logging.getLogger("sage_ops")
    root.handlers[:] = handlers
    root.setLevel(lc.level)


def owner_only(*found: Path) -> None:
    """Take group and other bits off what exists (files an older version made 0644, dirs 0755);
    what is made from now on is owner-only through the daemon's umask (077)."""
    for p in found:
        with contextlib.suppress(FileNotFoundError):
            mode = p.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                os.chmod(p, stat.S_IMODE(mode) & 0o700)


def bind_unix(path: Path, mode: int = 0o600) -> socket.socket:
    """Bind the socket owner-only from the first instant (umask), then open it as far as the
    config says (chmod; 0660 lets a group in, each member's uid mapped to a tenant)."""
    paths.ensure_dir(path.parent)
    if len(str(path).encode()) > 107:
        raise DaemonUnavailable(f"socket path too long for a Unix socket: {path}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(2048)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def local_admin_token() -> str:
    """The token the local user's client reads for TCP addresses (created once, 0600)."""
    return paths.secret_file(paths.token_file(), lambda: new_token()[0])


class PidLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        paths.ensure_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode().strip()
            os.close(fd)
            raise Conflict(f"a daemon is already running (pid {other or '?'}) for {self.path.parent}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self.fd)
            self.fd = None


class QuietRay(logging.Filter):
    """Ray warns that it sets no SIGTERM handler when connected from a thread: the daemon owns its
    signals (Daemon.serve), so the warning is only noise on the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")

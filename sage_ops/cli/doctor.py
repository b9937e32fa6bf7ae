"""`sage-ops doctor`: check this machine's setup (Python, Ray, config, daemon, database, disk, SSH
agent) and say how to fix each problem, so that a first failure is a next step, not a traceback.

It talks to the daemon only through the client (the heavy parts stay out of the CLI), and every
probe has a short timeout: with the daemon down the whole report takes a second or two."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, Field
from rich.table import Table
from rich.text import Text

from .. import __version__, paths, render
from ..client import JobManagerClient
from ..config import Config, load_config
from ..errors import DaemonUnavailable, SageOpsError
from ..schemas import Health
from ..transport import parse_addresses
from . import EXIT_FAILED, Ctx, cli, json_option, pass_ctx

Status = Literal["OK", "WARN", "FAIL"]
RANK: dict[str, int] = {"OK": 0, "WARN": 1, "FAIL": 2}
STYLE: dict[str, str] = {"OK": "green", "WARN": "yellow", "FAIL": "bold red"}
MIN_PYTHON = (3, 10)
MiB, GiB = 2**20, 2**30
WARN_FREE, FAIL_FREE = 1 * GiB, 100 * MiB
HEALTH_TIMEOUT = 2.0  # seconds: a daemon that takes longer is as good as hung for a user
CONNECT_TIMEOUT = 1.5
AGENT_FIX = "eval $(ssh-agent) && ssh-add"


class Check(BaseModel):
    """One line of the report (the JSON shape scripts read: a list of these)."""

    check: str = Field(description="python, ray, config, daemon, database, disk or ssh-agent")
    status: Status
    detail: str = Field(description="one line: what was found")
    fix: str | None = Field(None, description="for WARN/FAIL: a command or step that fixes it")


@dataclass
class Probe:
    """What the checks share: the CLI context, the config (defaults when it does not load) and the
    daemon's health once the daemon check got it (the database check reuses it)."""

    ctx: Ctx
    config: Config | None = None
    health: Health | None = None
    local: bool = True  # the daemon (if reached) runs on this machine: its files are ours to look at

    @property
    def cfg(self) -> Config:
        if self.config is None:
            self.config = _default_config()
        return self.config


def _default_config() -> Config:
    """Defaults (with valid SAGE_OPS_* overrides) for when the config does not load: the other checks
    still have paths to look at."""
    try:
        return Config()
    except Exception:  # noqa: BLE001 - a bad SAGE_OPS_* variable: plain defaults then
        return Config.model_construct()


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _worst(*statuses: Status) -> Status:
    return max(statuses, key=lambda s: RANK[s], default="OK")


def _ok(name: str, detail: str) -> Check:
    return Check(check=name, status="OK", detail=_one_line(detail))


def _bad(name: str, status: Status, detail: str, fix: str) -> Check:
    return Check(check=name, status=status, detail=_one_line(detail), fix=fix)


def _verdict(name: str, statuses: list[Status], parts: list[str], fixes: list[str]) -> Check:
    """A check made of several findings: the worst status, every finding, every fix."""
    status = _worst(*statuses)
    if status == "OK":
        return _ok(name, "; ".join(parts))
    return _bad(name, status, "; ".join(parts), "; ".join(fixes))


def _size(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def _existing(path: Path) -> Path:
    """The path itself or its nearest existing parent (what would hold it once created)."""
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path("/")


# -- python and ray ------------------------------------------------------------------------------
def _ray_pythons() -> list[str]:
    """The Python versions Ray's package lists as supported (its classifiers), e.g. ['3.10', ...]."""
    try:
        classifiers = metadata.metadata("ray").get_all("Classifier") or []
    except metadata.PackageNotFoundError:
        return []
    found = [m.group(1) for c in classifiers if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)",
                                                                   c.strip()))]
    return sorted(found, key=lambda v: int(v.split(".")[1]))


def check_python(p: Probe) -> Check:
    """The interpreter that runs sage-ops (and the daemon it starts)."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    detail = f"Python {platform.python_version()} ({sys.executable})"
    supported = _ray_pythons()
    span = f"{supported[0]}-{supported[-1]}" if supported else "3.10+"
    venv = f"python{supported[-1] if supported else '3.12'} -m venv ~/.venvs/sage-ops && " \
           "~/.venvs/sage-ops/bin/pip install sage-ops"
    if sys.version_info[:2] < MIN_PYTHON:
        return _bad("python", "FAIL", f"{detail}: sage-ops needs Python 3.10 or newer", venv)
    if supported and here not in supported:
        return _bad("python", "WARN", f"{detail}: Ray lists only Python {span}", venv)
    return _ok("python", detail + (f"; Ray supports {span}" if supported else ""))


def _pinned_ray() -> str | None:
    """sage-ops's own requirement on Ray, e.g. 'ray[default]==2.60.0' (None if not installed as a package)."""
    try:
        requires = metadata.requires("sage-ops") or []
    except metadata.PackageNotFoundError:
        return None
    for req in requires:
        spec, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        name = re.match(r"\s*([A-Za-z0-9_.-]+)", spec)
        if name and name.group(1).lower() == "ray":
            return spec.strip()
    return None


def _satisfies(installed: str, requirement: str) -> bool | None:
    """Does `installed` meet the requirement's version specifier? None when it cannot be told."""
    spec = re.sub(r"^\s*[A-Za-z0-9_.-]+\s*(\[[^\]]*\])?", "", requirement).strip()
    if not spec:
        return True
    if re.fullmatch(r"==\s*[\w.+!-]+", spec):
        return installed == spec[2:].strip()
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        return None
    return SpecifierSet(spec).contains(installed, prereleases=True)


def _missing_default_extras() -> list[str]:
    """Packages of Ray's `default` extra (dashboard, agent) that are not installed."""
    try:
        requires = metadata.requires("ray") or []
    except metadata.PackageNotFoundError:
        return []
    try:
        from packaging.requirements import Requirement
    except ImportError:
        Requirement = None  # noqa: N806 - names only, then
    missing: set[str] = set()
    for req in requires:
        spec, _, marker = req.partition(";")
        if not re.search(r"""extra\s*==\s*["']default["']""", marker):
            continue
        if Requirement is not None:
            parsed = Requirement(req)
            if parsed.marker is not None and not parsed.marker.evaluate({"extra": "default"}):
                continue
            name = parsed.name
        else:
            m = re.match(r"\s*([A-Za-z0-9_.-]+)", spec)
            if not m:
                continue
            name = m.group(1)
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.add(name)
    return sorted(missing)


def check_ray(p: Probe) -> Check:
    """Ray as installed next to sage-ops, against the version sage-ops pins."""
    pinned = _pinned_ray()
    install = f"pip install '{pinned or 'ray[default]'}'"
    try:
        installed = metadata.version("ray")
    except metadata.PackageNotFoundError:
        return _bad("ray", "FAIL", f"ray is not installed (sage-ops needs {pinned or 'ray[default]'})", install)
    if pinned is None:
        return _ok("ray", f"ray {installed} (sage-ops's pinned version unknown: not installed as a package)")
    fits = _satisfies(installed, pinned)
    if fits is False:
        return _bad("ray", "WARN", f"ray {installed} is installed, sage-ops pins {pinned}", install)
    missing = _missing_default_extras()
    if missing:
        return _bad("ray", "WARN", f"ray {installed} without its [default] extra (missing: {', '.join(missing)})",
                    install)
    return _ok("ray", f"ray {installed} (pinned {pinned})" if fits else f"ray {installed} (requirement {pinned})")


# -- config --------------------------------------------------------------------------------------
def check_config(p: Probe) -> Check:
    """Load the config as the daemon would; on failure the rest runs on defaults."""
    explicit = p.ctx.config_path or os.environ.get("SAGE_OPS_CONFIG")
    file = Path(explicit) if explicit else paths.config_file()
    overrides = sorted(k for k in os.environ if k.startswith("SAGE_OPS_") and "__" in k)
    try:
        p.config = load_config(p.ctx.config_path)
    except SageOpsError as exc:
        p.config = _default_config()
        if "no such file" in exc.message:
            fix = "point --config (or $SAGE_OPS_CONFIG) at an existing file, or drop it: unset SAGE_OPS_CONFIG"
        elif exc.message.startswith("$SAGE_OPS_"):
            var = exc.message[1:].split(":", 1)[0]
            fix = f"fix or unset the variable: unset {var}"
        else:
            env = f" (or the SAGE_OPS_* variable that sets it: {', '.join(overrides)})" if overrides else ""
            fix = f"fix or remove that key: ${{EDITOR:-vi}} {file}{env}"
        return _bad("config", "FAIL", f"{exc.message} (the other checks use the defaults)", fix)
    where = str(file) if file.exists() else f"defaults (no {file})"
    env = f" + {len(overrides)} SAGE_OPS_* override(s)" if overrides else ""
    return _ok("config", f"{where}{env}")


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
        return _bad("daemon", "FAIL", f"daemon not running: no socket at {path}", "sage-ops daemon start")
    if not stat.S_ISSOCK(path.stat().st_mode):
        return _bad("daemon", "FAIL", f"{path} exists but is not a socket",
                    f"mv {path} {path}.bak && sage-ops daemon start")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(str(path))
    except ConnectionRefusedError:
        return _bad("daemon", "FAIL", f"stale socket {path}: nobody is listening (the daemon exited without "
                    "removing it)", "sage-ops daemon start  (it replaces the stale socket)")
    except PermissionError:
        st = path.stat()
        return _bad("daemon", "FAIL", f"permission denied on {path} (owner uid {st.st_uid}, mode "
                    f"{stat.S_IMODE(st.st_mode):04o})", f"run as uid {st.st_uid}, or have its owner set "
                    "security.socket_mode: '0660' and add you to the socket's group")
    except OSError as exc:
        return _bad("daemon", "FAIL", f"cannot connect to {path}: {exc.strerror or exc}",
                    "sage-ops daemon stop; sage-ops daemon start")
    finally:
        sock.close()
    return _bad("daemon", "FAIL", f"a process listens on {path} but did not answer /v1/health within "
                f"{HEALTH_TIMEOUT:g}s (busy or hung)",
                f"sage-ops daemon stop && sage-ops daemon start  (log: {cfg.logging.file})")


def check_daemon(p: Probe) -> Check:
    """The address the CLI would use, its socket file, and whether the daemon answers in time."""
    cfg = p.cfg
    if p.ctx.address:
        raw, source = p.ctx.address, "--address"
    elif os.environ.get("SAGE_OPS_ADDRESS"):
        raw, source = os.environ["SAGE_OPS_ADDRESS"], "$SAGE_OPS_ADDRESS"
    else:
        raw, source = f"unix://{cfg.jobmanager.socket}", "jobmanager.socket"
    try:
        addresses = parse_addresses(raw)
    except SageOpsError as exc:
        return _bad("daemon", "FAIL", f"{source}: {exc.message}",
                    "use --address unix:///path.sock or HOST:PORT (or fix $SAGE_OPS_ADDRESS)")
    first = addresses[0]
    p.local = first.kind == "unix"
    path = Path(first.target) if first.kind == "unix" else None
    if path is not None and len(str(path).encode()) > 107:
        return _bad("daemon", "FAIL", f"socket path too long for a Unix socket ({len(str(path))} bytes): {path}",
                    "set jobmanager.socket to a shorter path (or export XDG_RUNTIME_DIR=/run/user/$(id -u))")
    client = JobManagerClient(raw, config={"retry_attempts": 1, "timeout": HEALTH_TIMEOUT, "failover_timeout": 0,
                                           "ca": p.ctx.ca}, token=p.ctx.token)
    try:
        health = client.health_check()
    except DaemonUnavailable as exc:
        if path is not None:
            return _unreachable_unix(path, cfg)
        return _bad("daemon", "FAIL", f"daemon not reachable at {raw} ({source}): {exc.message.split(' — ')[0]}",
                    "sage-ops daemon start --tcp HOST:PORT  (on that host), or fix --address / $SAGE_OPS_ADDRESS")
    except SageOpsError as exc:
        return _bad("daemon", "FAIL", f"the daemon at {raw} refused the health check: {exc.message}",
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
    return _verdict("daemon", statuses, parts, fixes)


# -- database ------------------------------------------------------------------------------------
def _redact(url: str) -> str:
    """Never show a database password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def _sqlite_path(url: str) -> Path | None:
    """sqlite:///relative.db, sqlite:////abs.db -> the file; None for in-memory."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    rest = rest.split("?", 1)[0]
    rest = rest[1:] if rest.startswith("/") else rest
    if not rest or rest == ":memory:":
        return None
    return Path(rest).expanduser().absolute()


def _free(status: list[Status], where: Path, fixes: list[str]) -> str:
    """Free space on `where`'s filesystem, graded WARN < 1 GiB < ... and FAIL < 100 MiB."""
    free = shutil.disk_usage(_existing(where)).free
    if free < FAIL_FREE:
        status.append("FAIL")
    elif free < WARN_FREE:
        status.append("WARN")
    else:
        return f"{_size(free)} free"
    fixes.append(f"free space on {_existing(where)}: du -xsh {_existing(where)}/* | sort -h | tail")
    return f"only {_size(free)} free"


def _sqlite(path: Path) -> tuple[Status, str, str | None]:
    """The SQLite file and its directory: SQLite writes journal files next to the database, so the
    directory must be writable too."""
    statuses: list[Status] = ["OK"]
    fixes: list[str] = []
    parts = [f"sqlite {path}"]
    folder = path.parent
    if not folder.exists():
        base = _existing(folder)
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
        parts.append(_size(path.stat().st_size))
    else:
        parts.append("not created yet")
    parts.append(_free(statuses, folder, fixes))
    status = _worst(*statuses)
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
        parts.insert(0, _redact(url))
    else:
        statuses.append("WARN")
        parts.insert(0, f"{_redact(url)}: cannot check a {scheme} database while the daemon is down")
        fixes.append("sage-ops daemon start, then sage-ops doctor")
    return _verdict("database", statuses, parts, fixes)


# -- disk ----------------------------------------------------------------------------------------
def check_disk(p: Probe) -> Check:
    """The state dir (database, logs) and /tmp (Ray's sessions and spill) each need room."""
    statuses: list[Status] = ["OK"]
    fixes: list[str] = []
    parts: list[str] = []
    seen: dict[int, str] = {}
    for label, where in (("state " + str(paths.state_dir()), paths.state_dir()), ("/tmp", Path("/tmp"))):
        dev = os.stat(_existing(where)).st_dev
        if dev in seen:
            parts.append(f"{label}: same filesystem as {seen[dev]}")
            continue
        seen[dev] = label.split()[0]
        parts.append(f"{label}: {_free(statuses, where, fixes)}")
    return _verdict("disk", statuses, parts, fixes)


# -- ssh agent -----------------------------------------------------------------------------------
def check_ssh_agent(p: Probe) -> Check:
    """`nodes add` logs in with the agent's keys unless --key-file is given; only counts keys."""
    sock = os.environ.get("SSH_AUTH_SOCK")
    if not sock:
        return _bad("ssh-agent", "WARN", "SSH_AUTH_SOCK is not set: needed only for `nodes add` without --key-file",
                    AGENT_FIX)
    path = Path(sock)
    if not path.exists() or not stat.S_ISSOCK(path.stat().st_mode):
        return _bad("ssh-agent", "WARN", f"SSH_AUTH_SOCK={sock} is not a socket (agent gone?): needed only for "
                    "`nodes add` without --key-file", AGENT_FIX)
    ssh_add = shutil.which("ssh-add")
    if ssh_add is None:
        return _ok("ssh-agent", f"agent socket {sock} (ssh-add not installed: keys not counted)")
    try:
        proc = subprocess.run([ssh_add, "-l"], capture_output=True, text=True, timeout=CONNECT_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return _bad("ssh-agent", "WARN", f"the agent at {sock} does not answer", AGENT_FIX)
    if proc.returncode == 0:  # one line per key; the lines themselves are never shown
        keys = sum(1 for line in proc.stdout.splitlines() if line.strip())
        return _ok("ssh-agent", f"agent {sock} with {keys} key{'s' if keys != 1 else ''}")
    if proc.returncode == 1:
        return _bad("ssh-agent", "WARN", f"the agent at {sock} holds no keys: needed only for `nodes add` without "
                    "--key-file", "ssh-add  (or ssh-add ~/.ssh/id_ed25519)")
    return _bad("ssh-agent", "WARN", f"cannot talk to the agent at {sock} (ssh-add exit {proc.returncode})",
                AGENT_FIX)


CHECKS: list[tuple[str, Callable[[Probe], Check]]] = [
    ("python", check_python), ("ray", check_ray), ("config", check_config), ("daemon", check_daemon),
    ("database", check_database), ("disk", check_disk), ("ssh-agent", check_ssh_agent),
]


def run_checks(ctx: Ctx) -> list[Check]:
    """Every check, in order; one that breaks becomes a FAIL line instead of a traceback."""
    probe = Probe(ctx)
    out: list[Check] = []
    for name, fn in CHECKS:
        try:
            out.append(fn(probe))
        except Exception as exc:  # noqa: BLE001 - the report must always come out whole
            out.append(_bad(name, "FAIL", f"the check itself failed: {exc.__class__.__name__}: {exc}",
                            "run `sage-ops doctor --json` and report this line as a bug"))
    return out


def show(checks: list[Check]) -> None:
    """The table for people; markup-free Text so paths and messages print as they are."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("CHECK", "STATUS", "DETAIL"):
        table.add_column(col, no_wrap=col != "DETAIL", overflow="fold")
    for c in checks:
        detail = Text(c.detail)
        if c.fix:
            detail.append("\nfix: ", style="bold").append(c.fix)
        table.add_row(c.check, Text(c.status, style=STYLE[c.status]), detail)
    out = render.console()
    out.print(table)
    fails, warns = (sum(c.status == s for c in checks) for s in ("FAIL", "WARN"))
    if fails or warns:
        out.print(Text(f"{fails} failed, {warns} warning{'s' if warns != 1 else ''}",
                       style=STYLE["FAIL" if fails else "WARN"]))
    else:
        out.print(Text("all checks passed", style=STYLE["OK"]))


@cli.command()
@json_option
@pass_ctx
def doctor(ctx: Ctx, as_json: bool) -> None:
    """Check Python, Ray, the config, the daemon, the database, disk space and the SSH agent, and
    say how to fix what is wrong (exit 1 if any check FAILs)."""
    checks = run_checks(ctx)
    if as_json:
        render.print_json(checks)
    else:
        show(checks)
    if any(c.status == "FAIL" for c in checks):
        sys.exit(EXIT_FAILED)

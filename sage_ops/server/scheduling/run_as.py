"""Which Unix user a job runs as: the boundary below the API, drawn as Slurm draws it.

A daemon that can switch users (root, with `setpriv`) is *multi-user*: a job runs as whoever it
belongs to — the peer uid of a Unix-socket caller, the tenant's `run_as` user for a token
caller — never as the daemon, whose identity holds the database, the keys and the Ray token. Only
the daemon's own uid on the socket and admin tokens (which can already set any tenant's run_as:
hand them out like that login) get jobs without a tenant that run as it. A job of a tenant
without `run_as` submitted with a token is refused rather than run as the daemon.

A daemon that cannot switch users (a laptop, a service user) is *single-user*: every tenant's jobs
run as its own OS user and tenants are kept apart by the API only; `health` says so.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from ... import paths, rayhead
from ...config import Config, config_path
from ...errors import Forbidden, Invalid
from ...schemas import JobKind, JobSpec
from ...storage_url import private_paths
from ..backend import sandbox

Mode = Literal["auto", "on", "off"]


def can_switch() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def user_name(uid: int) -> str:
    """The name the job row keeps (names, not uids, travel to nodes: as Slurm, users must exist on
    every node); `#UID` for a uid without a passwd entry."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


class RunAs:
    """The policy: who a new job runs as, and which run_as a tenant may be given."""

    def __init__(self, mode: Mode = "auto", sandbox_mode: Literal["auto", "off"] = "auto") -> None:
        self.owner = os.getuid()
        self.multi_user = mode == "on" or (mode == "auto" and can_switch())
        if self.multi_user and not can_switch():
            raise Invalid("security.switch_users: on needs a daemon running as root with setpriv (util-linux)")
        # single-user: where bubblewrap works, the daemon's own jobs do not see its files
        self.sandbox_mode = sandbox_mode
        self.sandboxed = not self.multi_user and sandbox_mode == "auto" and sandbox.bwrap() is not None

    def hidden(self, cfg: Config, kind: JobKind) -> list[str]:
        """What a job of the daemon's own user must not see (sandbox.wrap hides it), on a
        single-user daemon, as real paths: the dirs that are the daemon's (state, config, socket's,
        log storage, a file:// store, the store's credential files, its Ray head's private temp
        dir, which a pipeline drives Ray through and keeps) and its files that may live elsewhere
        (sealing key, TLS key, config file, log file, SQLite database), one by one: hiding their
        dir could empty /etc or /var/log for the job."""
        if not self.sandboxed:
            return []
        dirs = [paths.state_dir(), paths.config_dir(), paths.runtime_dir(), cfg.storage.path,
                *private_paths(cfg.storage.url)]
        record = rayhead.load_record(paths.state_dir()) or {}
        if kind is not JobKind.PIPELINE and record.get("temp_dir"):
            dirs.append(Path(record["temp_dir"]).parent)
        log = cfg.logging.file
        files = [cfg.jobmanager.socket, cfg.security.secret_key_file, cfg.security.tls_key, config_path()[0], log,
                 *(log.with_name(f"{log.name}.{i}") for i in range(1, cfg.logging.backups + 1))]
        if cfg.database.url.startswith("sqlite:///"):
            db = Path(cfg.database.url.removeprefix("sqlite:///"))
            files += [db, *(db.with_name(db.name + end) for end in ("-wal", "-shm", "-journal"))]
        out: list[str] = []
        for path in sorted({os.path.realpath(p) for p in (*dirs, *files) if p is not None}):
            if not any(path.startswith(f"{kept}/") for kept in out):  # inside one already hidden
                out.append(path)
        return out

    def describe(self) -> str:
        name = user_name(self.owner)
        if self.multi_user:
            return (f"multi-user: each job runs as its owner's Unix user (the socket caller's uid, or its "
                    f"tenant's run_as); never as the daemon's {name}")
        if self.sandboxed:
            wall = "jobs do not see the daemon's files (bubblewrap)"
        else:
            wall = "jobs can read the daemon's files by path " + (
                "(security.sandbox: off)" if self.sandbox_mode == "off" else
                "(bubblewrap cannot make namespaces here)" if sandbox.installed() else
                "(install bubblewrap to hide them)")
        return (f"single-user: every tenant's jobs run as {name} (uid {self.owner}), the daemon's own OS user; "
                f"tenants are kept apart by the API only, not by the OS; {wall}")

    def check_user(self, name: str) -> str:
        """A tenant's run_as: a user that exists here and is neither root nor the daemon."""
        if not self.multi_user:
            raise Invalid(f"run_as needs a multi-user daemon (started as root); this one runs every job as "
                          f"{user_name(self.owner)}")
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise Invalid(f"run_as: no such user on the daemon's machine: {name}") from None
        if entry.pw_uid in (0, self.owner):
            raise Invalid(f"run_as: {name} is root or the daemon's own user; jobs must not run as it")
        return name

    def for_job(self, spec: JobSpec, *, uid: int | None, admin: bool, tenant_users: Mapping[str, str | None]
                ) -> str | None:
        """The user `spec` runs as (None: the daemon's own), for a caller known by its socket `uid`
        or else by a token (an `admin` one or not); `tenant_users` maps tenants to their run_as."""
        if not self.multi_user:
            return None
        if uid is not None:
            who = None if uid == self.owner else user_name(uid)
        elif (who := tenant_users.get(spec.tenant or "")) is None and not (admin and not spec.tenant):
            tenant = f"tenant {spec.tenant}" if spec.tenant else "a job without a tenant"
            raise Forbidden(f"{tenant} has no run_as user, and jobs of its tokens never run as the daemon's own "
                            f"user: an admin sets one (sage-ops tenant update {spec.tenant or 'NAME'} --run-as USER)")
        if who is not None and spec.kind is JobKind.PIPELINE:
            raise Forbidden("a pipeline drives the daemon's Ray cluster, which does not isolate its drivers: on a "
                            "multi-user daemon only the daemon's own user submits them (give the tenant a daemon "
                            "of its own for pipelines)")
        return who

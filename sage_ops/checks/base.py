"""What every check of `sage-ops doctor` shares: the report line (Check), the probe they pass
along, and small graders (worst status, free space)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from ..config import Config
from ..telemetry import Health


class Target(Protocol):
    """What the command line says about the daemon (the CLI's Ctx)."""

    address: str | None
    config_path: str | None
    token: str | None
    ca: str | None

    def target(self, cfg: Config | None = None) -> tuple[str, str]: ...


Status = Literal["OK", "WARN", "FAIL"]
RANK: dict[str, int] = {"OK": 0, "WARN": 1, "FAIL": 2}
MIN_PYTHON = (3, 10)
MiB, GiB = 2**20, 2**30
WARN_FREE, FAIL_FREE = 1 * GiB, 100 * MiB
HEALTH_TIMEOUT = 2.0  # seconds: a daemon that takes longer is as good as hung for a user
CONNECT_TIMEOUT = 1.5
AGENT_FIX = "eval $(ssh-agent) && ssh-add"


class Check(BaseModel):
    """One line of the report (the JSON shape scripts read: a list of these)."""

    check: str = Field(description="python, ray, features, config, daemon, ray-head, database, disk or "
                       "ssh-agent")
    status: Status
    detail: str = Field(description="one line: what was found")
    fix: str | None = Field(None, description="for WARN/FAIL: a command or step that fixes it")


@dataclass
class Probe:
    """What the checks share: the CLI context, the config (defaults when it does not load) and the
    daemon's health once the daemon check got it (the database check reuses it)."""

    ctx: Target
    config: Config | None = None
    health: Health | None = None
    local: bool = True  # the daemon (if reached) runs on this machine: its files are ours to look at

    @property
    def cfg(self) -> Config:
        if self.config is None:
            self.config = default_config()
        return self.config


def default_config() -> Config:
    """Defaults (with valid SAGE_OPS_* overrides) for when the config does not load: the other checks
    still have paths to look at."""
    try:
        return Config()
    except Exception:  # noqa: BLE001 - a bad SAGE_OPS_* variable: plain defaults then
        return Config.model_construct()


def one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def worst(*statuses: Status) -> Status:
    return max(statuses, key=lambda s: RANK[s], default="OK")


def ok(name: str, detail: str) -> Check:
    return Check(check=name, status="OK", detail=one_line(detail))


def bad(name: str, status: Status, detail: str, fix: str) -> Check:
    return Check(check=name, status=status, detail=one_line(detail), fix=fix)


def verdict(name: str, statuses: list[Status], parts: list[str], fixes: list[str]) -> Check:
    """A check made of several findings: the worst status, every finding, every fix."""
    status = worst(*statuses)
    if status == "OK":
        return ok(name, "; ".join(parts))
    return bad(name, status, "; ".join(parts), "; ".join(fixes))


def size(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def existing(path: Path) -> Path:
    """The path itself or its nearest existing parent (what would hold it once created)."""
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path("/")


def free_space(status: list[Status], where: Path, fixes: list[str]) -> str:
    """Free space on `where`'s filesystem, graded WARN < 1 GiB < ... and FAIL < 100 MiB."""
    free = shutil.disk_usage(existing(where)).free
    if free < FAIL_FREE:
        status.append("FAIL")
    elif free < WARN_FREE:
        status.append("WARN")
    else:
        return f"{size(free)} free"
    fixes.append(f"free space on {existing(where)}: du -xsh {existing(where)}/* | sort -h | tail")
    return f"only {size(free)} free"

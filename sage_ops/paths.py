"""XDG locations, so that HOME / XDG_* isolate one daemon (and its state) from another."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

APP = "sage-ops"


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


def state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / APP


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / APP


def runtime_dir() -> Path:
    """The socket lives here; without XDG_RUNTIME_DIR (root shells, containers) it falls back to state."""
    value = os.environ.get("XDG_RUNTIME_DIR")
    return Path(value) / APP if value else state_dir()


def config_file() -> Path:
    return config_dir() / "config.yaml"


def default_socket() -> Path:
    return runtime_dir() / "sage-ops.sock"


def pidfile() -> Path:
    return state_dir() / "daemon.pid"


def token_file() -> Path:
    return config_dir() / "token"


def working_dir(given: str | os.PathLike[str] | None = None) -> str | None:
    """Where a submitted job runs, for the CLI and the Python client alike: `given` made absolute
    here, where it was meant, else the directory it was submitted from (as a shell user expects);
    None when that directory is gone (the job then runs in a scratch directory)."""
    try:
        return os.path.abspath(given) if given else os.getcwd()
    except FileNotFoundError:
        return os.fspath(given) if given else None


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path


def secret_file(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in `path`, made by `make()` the first time: owner-only (0600) from the first
    instant, and never overwritten (a process that loses the race reads the winner's)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    ensure_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    value = make()
    with os.fdopen(fd, "w") as f:
        f.write(value)  # no newline: some readers (Ray's token file) take the bytes as they are
    return value

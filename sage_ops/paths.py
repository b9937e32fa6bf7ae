"""XDG locations, so that HOME / XDG_* isolate one daemon (and its state) from another."""

from __future__ import annotations

import os
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


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path

"""The config file without pydantic: where it is, its raw data, and the daemon's socket as a
client needs it. Every CLI command needs the socket; validating the whole config for it would
cost more than the rest of the command (config.py validates it all, for the daemon, `config
show` and any case this module cannot settle)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from . import paths
from .errors import Invalid

#: every section and key of config.Config (tests/test_cli_imports.py keeps the two equal): a file
#: or an environment variable naming anything else goes through the full load, which names it
KEYS: dict[str, frozenset[str]] = {
    "jobmanager": frozenset({"host", "port", "socket", "max_jobs", "job_timeout", "heartbeat_interval",
                             "kill_grace", "prefetch", "executors", "backfill", "backfill_depth", "array_window",
                             "preempt_per_minute", "max_connections", "max_connections_per_ip", "header_timeout",
                             "idle_timeout", "retention", "retention_batch"}),
    "ray": frozenset({"address", "node_ip", "namespace", "include_dashboard", "dashboard_host", "dashboard_port",
                      "num_cpus", "client_server_port", "metrics_export_port", "temp_root", "tls", "cluster_id"}),
    "storage": frozenset({"type", "url", "options", "flush_interval", "path", "max_log_bytes", "max_result_bytes",
                            "inline_result_bytes"}),
    "database": frozenset({"url", "synchronous"}),
    "logging": frozenset({"level", "file", "format", "max_bytes", "backups", "stderr"}),
    "security": frozenset({"socket_mode", "tls_cert", "tls_key", "secret_key_file", "max_body_bytes", "rate_limit",
                           "rate_burst", "audit_retention_days", "denial_audit_interval", "insecure_plaintext",
                           "switch_users", "sandbox"}),
    "metrics": frozenset({"interval", "retention_days"}),
    "nodes": frozenset({"head_address", "known_hosts", "venv", "install_timeout", "join_timeout", "pools"}),
}
PREFIX = "sage_ops_"
_NOTHING = re.compile(r"(\s*(#.*)?|[A-Za-z_]\w*:\s*(#.*)?)")  # a comment, a blank, or an empty section


def config_path(path: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """The file a command reads: `path`, else $SAGE_OPS_CONFIG, else the XDG one; and whether it
    was asked for (then it must exist)."""
    explicit = path or os.environ.get("SAGE_OPS_CONFIG")
    return (Path(explicit) if explicit else paths.config_file()), bool(explicit)


def read_file(path: str | os.PathLike[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """The file's data, sections left empty (all commented out) dropped; {} when there is no file
    (an error if it was asked for). A file of comments only is not even parsed."""
    file, explicit = config_path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        if explicit:
            raise Invalid(f"config {file}: no such file") from None
        return file, {}
    except OSError as exc:
        raise Invalid(f"config {file}: cannot read it ({exc.strerror})") from None
    if all(_NOTHING.fullmatch(line) for line in text.splitlines()):
        return file, {}  # `config init`'s template as written: every key commented out
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise Invalid(f"config {file}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise Invalid(f"config {file}: expected a mapping at the top level")
    return file, {k: v for k, v in data.items() if v is not None}  # a section left all commented out


def client_socket(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The daemon's socket (env > file > default) read without validating the config; None when
    only the full load can tell: a key this table does not know (so that its error names it), a
    section given as one JSON variable, a socket that is not a string."""
    socket: Any = None
    for name, value in os.environ.items():
        lower = name.lower()
        if not lower.startswith(PREFIX):
            continue
        section, sep, key = lower[len(PREFIX):].partition("__")
        if section in KEYS and (not sep or key not in KEYS[section]):
            return None
        if (section, key) == ("jobmanager", "socket"):
            socket = value
    _, data = read_file(path)
    for section, values in data.items():
        if section not in KEYS or not isinstance(values, dict) or not set(values) <= KEYS[section]:
            return None
    manager = data.get("jobmanager", {})
    if socket is None and "socket" not in manager:
        return paths.default_socket()
    socket = manager["socket"] if socket is None else socket
    return Path(socket) if isinstance(socket, str) and socket else None

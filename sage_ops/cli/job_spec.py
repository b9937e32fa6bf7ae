"""`submit`'s options made into the API's job spec (JSON, only what was given): the reading of
sizes, moments, signals, arrays, secrets and of the first word (a script to ship or a command).
Apart from the commands (jobs.py) because `update` (scheduling.py) reads the same options, and a
change to how an option is read belongs here whatever command takes it."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from .. import paths
from ..arrays import parse_array
from ..errors import SageOpsError
from ..units import parse_memory, parse_moment, parse_signal
from . import read_secret_file


def _kv(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=what)
        out[key] = value
    return out


def secret_values(items: Sequence[str], files: Sequence[str] = ()) -> dict[str, str]:
    """--secret-env as docker's -e: NAME takes the value from this environment (off the command
    line); NAME=VALUE still works but warns (every local user reads /proc/*/cmdline). Each
    --secret-env-file holds NAME=VALUE or NAME lines (# comments), as docker's --env-file."""
    out: dict[str, str] = {}
    for file in files:
        for n, line in enumerate(read_secret_file(file, "--secret-env-file").splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                out.update(_secret(line, f"--secret-env-file {file}:{n}"))
    shown = [item.split("=", 1)[0] for item in items if "=" in item]
    if shown:
        click.echo(f"warning: --secret-env {','.join(shown)}=... is visible to every local user in /proc/*/cmdline; "
                   "give only the NAME (its value is taken from your environment) or use --secret-env-file", err=True)
    for item in items:
        out.update(_secret(item, "--secret-env"))
    return out


def _secret(item: str, what: str) -> dict[str, str]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
        raise click.BadParameter(f"{key or item!r} is not an environment variable name", param_hint=what)
    if not sep:
        if key not in os.environ:
            raise click.BadParameter(f"{key} is not set in this environment (export it first, or use "
                                     "--secret-env-file)", param_hint=what)
        value = os.environ[key]
    return {key: value}


def _float(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number", param_hint=what) from None


# a first word with one of these endings (or a /) names a local script, never a command on the node's PATH
SCRIPT_SUFFIXES = frozenset({".py", ".sh", ".bash", ".zsh", ".ksh", ".r", ".jl", ".pl", ".rb", ".js", ".mjs", ".ts",
                             ".lua", ".php", ".tcl", ".awk", ".m"})


def _is_script(word: str, workdir: str | None) -> bool:
    """Is the first word a script to ship? A local file is. A directory, or a path (a /, a script's
    suffix) to nothing, is a mistake said now rather than exit 127 on a node later; a command of
    the node's (`python`, `--command`, or a path that exists in --workdir) is not checked."""
    path = Path(word)
    if path.is_dir():
        raise click.UsageError(f"{word} is a directory, not a script: give a file, or --command to run {word} as "
                               "a command on the node")
    if path.is_file():
        return True
    if ("/" in word or path.suffix.lower() in SCRIPT_SUFFIXES) and not (workdir and (Path(workdir) / word).exists()):
        raise click.UsageError(f"no such script: {word}; --command runs it as a command on the node's PATH")
    return False


def memory_bytes(value: str | None) -> int | None:
    """--memory in bytes: MiB when bare (`512`, as Slurm's --mem), else with its unit (8GB, 512MiB)."""
    try:
        return None if value is None else parse_memory(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--memory") from None


def moment(text: str | None) -> float | None:
    """--begin as epoch seconds, read here: `14:30` and `tomorrow` are the caller's local time."""
    if text is None:
        return None
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--begin'") from None


def job_list(values: Sequence[str]) -> list[str]:
    """Job ids (or names) from repeated and comma-separated option values."""
    return [j.strip() for v in values for j in v.split(",") if j.strip()]


def _script(path: Path) -> dict[str, str]:
    """A script job's file: its content travels with the job, so it runs on any node."""
    try:
        return {"filename": path.name, "content": path.read_text(encoding="utf-8")}
    except (OSError, UnicodeDecodeError) as exc:
        raise SageOpsError(f"cannot read script {path}: {exc}", "bad_request") from None


def checked(text: str | None, parse: Callable[[str], Any], option: str) -> Any:
    """An option's text parsed here, so a mistake is a usage error naming the option (None: not given)."""
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def array_option(text: str) -> dict[str, Any]:
    """--array as the API's `array`."""
    indices, throttle = parse_array(text)
    return {"indices": indices.text(), "throttle": throttle}


def signal_option(text: str) -> str:
    """--signal as the API's `signal`."""
    name, seconds = parse_signal(text)
    return f"{name}@{seconds:g}"


def build_spec(argv: Sequence[str], *, command: bool, name: str | None, cpu: float | None, memory: str | None,
               gpu: float | None, resource: Sequence[str], env: Sequence[str], workdir: str | None,
               priority: int, timeout: float | None, dependencies: Sequence[str] = (),
               after_notok: Sequence[str] = (), after_any: Sequence[str] = (), begin: str | None = None,
               hold: bool = False, kill_on_invalid_dep: bool = True, array: str | None = None,
               after_corr: Sequence[str] = (), preemptible: bool = False, warn_signal: str | None = None,
               retry_policy: dict[str, Any] | None = None, secret_env: dict[str, str] | None = None,
               tenant: str | None = None, shipped: str | None = None) -> dict[str, Any]:
    """The JobSpec as the API's JSON, only what was given (the daemon fills in and checks the rest)."""
    if not argv:
        raise click.UsageError("nothing to run: give a script file or a command (after --)")
    resources: dict[str, Any] = {"cpu": 1.0 if cpu is None else cpu, "gpu": gpu or 0.0}
    custom = {k: _float(v, "--resource") for k, v in _kv(resource, "--resource").items()}
    resources.update({k: v for k, v in (("memory", memory_bytes(memory)), ("custom_resources", custom)) if v})
    spec: dict[str, Any] = {"name": name, "resources": resources, "env": _kv(env, "--env"), "priority": priority,
                            "timeout": timeout, "working_dir": paths.working_dir(workdir),
                            "dependencies": list(dependencies), "after_notok": list(after_notok),
                            "after_any": list(after_any), "begin_at": moment(begin), "hold": hold or None,
                            "kill_on_invalid_dep": None if kill_on_invalid_dep else False,
                            "array": checked(array, array_option, "--array"), "after_corr": list(after_corr),
                            "preemptible": preemptible or None,
                            "signal": checked(warn_signal, signal_option, "--signal"),
                            "retry_policy": retry_policy,
                            "secret_env": secret_env or {}, "tenant": tenant}
    if not command and _is_script(argv[0], workdir or shipped):
        spec.update(kind="script", script=_script(Path(argv[0])), args=list(argv[1:]))
    else:
        spec.update(kind="command", command=list(argv))
    return {k: v for k, v in spec.items() if v is not None and v != {} and v != []}

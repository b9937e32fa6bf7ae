"""Checks of this machine: Python, Ray, the config, disk space and the SSH agent."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from .. import paths
from ..config import config_path, load_config
from ..errors import SageOpsError
from .base import (
    AGENT_FIX,
    CONNECT_TIMEOUT,
    MIN_PYTHON,
    Check,
    Probe,
    Status,
    bad,
    default_config,
    existing,
    free_space,
    ok,
    verdict,
)


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
        return bad("python", "FAIL", f"{detail}: sage-ops needs Python 3.10 or newer", venv)
    if supported and here not in supported:
        return bad("python", "WARN", f"{detail}: Ray lists only Python {span}", venv)
    return ok("python", detail + (f"; Ray supports {span}" if supported else ""))


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
        return bad("ray", "FAIL", f"ray is not installed (sage-ops needs {pinned or 'ray[default]'})", install)
    if pinned is None:
        return ok("ray", f"ray {installed} (sage-ops's pinned version unknown: not installed as a package)")
    fits = _satisfies(installed, pinned)
    if fits is False:
        return bad("ray", "WARN", f"ray {installed} is installed, sage-ops pins {pinned}", install)
    missing = _missing_default_extras()
    if missing:
        return bad("ray", "WARN", f"ray {installed} without its [default] extra (missing: {', '.join(missing)})",
                    install)
    return ok("ray", f"ray {installed} (pinned {pinned})" if fits else f"ray {installed} (requirement {pinned})")


# -- config --------------------------------------------------------------------------------------
def check_config(p: Probe) -> Check:
    """Load the config as the daemon would; on failure the rest runs on defaults."""
    file = config_path(p.ctx.config_path)[0]
    overrides = sorted(k for k in os.environ if k.startswith("SAGE_OPS_") and "__" in k)
    try:
        p.config = load_config(p.ctx.config_path)
    except SageOpsError as exc:
        p.config = default_config()
        if "no such file" in exc.message:
            fix = "point --config (or $SAGE_OPS_CONFIG) at an existing file, or drop it: unset SAGE_OPS_CONFIG"
        elif exc.message.startswith("$SAGE_OPS_"):
            var = exc.message[1:].split(":", 1)[0]
            fix = f"fix or unset the variable: unset {var}"
        else:
            env = f" (or the SAGE_OPS_* variable that sets it: {', '.join(overrides)})" if overrides else ""
            fix = f"fix or remove that key: ${{EDITOR:-vi}} {file}{env}"
        return bad("config", "FAIL", f"{exc.message} (the other checks use the defaults)", fix)
    where = str(file) if file.exists() else f"defaults (no {file})"
    env = f" + {len(overrides)} SAGE_OPS_* override(s)" if overrides else ""
    return ok("config", f"{where}{env}")


# -- disk ----------------------------------------------------------------------------------------
def check_disk(p: Probe) -> Check:
    """The state dir (database, logs) and /tmp (Ray's sessions and spill) each need room."""
    statuses: list[Status] = ["OK"]
    fixes: list[str] = []
    parts: list[str] = []
    seen: dict[int, str] = {}
    for label, where in (("state " + str(paths.state_dir()), paths.state_dir()), ("/tmp", Path("/tmp"))):
        dev = os.stat(existing(where)).st_dev
        if dev in seen:
            parts.append(f"{label}: same filesystem as {seen[dev]}")
            continue
        seen[dev] = label.split()[0]
        parts.append(f"{label}: {free_space(statuses, where, fixes)}")
    return verdict("disk", statuses, parts, fixes)


# -- ssh agent -----------------------------------------------------------------------------------
def check_ssh_agent(p: Probe) -> Check:
    """`nodes add` logs in with the agent's keys unless --key is given; only counts keys."""
    sock = os.environ.get("SSH_AUTH_SOCK")
    if not sock:
        return bad("ssh-agent", "WARN", "SSH_AUTH_SOCK is not set: needed only for `sage-ops nodes add` without "
                    "--key", AGENT_FIX)
    path = Path(sock)
    if not path.exists() or not stat.S_ISSOCK(path.stat().st_mode):
        return bad("ssh-agent", "WARN", f"SSH_AUTH_SOCK={sock} is not a socket (agent gone?): needed only for "
                    "`sage-ops nodes add` without --key", AGENT_FIX)
    ssh_add = shutil.which("ssh-add")
    if ssh_add is None:
        return ok("ssh-agent", f"agent socket {sock} (ssh-add not installed: keys not counted)")
    try:
        proc = subprocess.run([ssh_add, "-l"], capture_output=True, text=True, timeout=CONNECT_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return bad("ssh-agent", "WARN", f"the agent at {sock} does not answer", AGENT_FIX)
    if proc.returncode == 0:  # one line per key; the lines themselves are never shown
        keys = sum(1 for line in proc.stdout.splitlines() if line.strip())
        return ok("ssh-agent", f"agent {sock} with {keys} key{'s' if keys != 1 else ''}")
    if proc.returncode == 1:
        return bad("ssh-agent", "WARN", f"the agent at {sock} holds no keys: needed only for `sage-ops nodes add` "
                    "without --key", "ssh-add  (or ssh-add ~/.ssh/id_ed25519)")
    return bad("ssh-agent", "WARN", f"cannot talk to the agent at {sock} (ssh-add exit {proc.returncode})",
                AGENT_FIX)

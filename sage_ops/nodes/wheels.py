"""A wheelhouse for nodes without a package index: the head's exact Ray and this sage-ops with
every dependency, as wheels, so that a node installs with `pip install --no-index` (and the
versions cannot drift from the head's). Nodes that reach an index need none of it: the daemon
ships its own sage-ops wheel (own_wheel.py) and pip takes the rest from the node's index."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from sage_ops.errors import SageOpsError

from .own_wheel import own_wheel


def build_wheelhouse(dest: Path, *, cache: Path | None = None) -> list[Path]:
    """Fill `dest` with wheels of `ray[default]==<the head's ray>` and sage-ops plus all their
    dependencies (`pip wheel`, which uses the local pip cache and index); returns the wheels.
    sage-ops is this one's own wheel (built into `cache`, by default the state dir's): it is on
    no index, so pip only copies it and resolves what it requires."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sage_ops = str(own_wheel(cache).path)
    ray_version = metadata.version("ray")
    cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--progress-bar", "off",
           "-w", str(dest), f"ray[default]=={ray_version}", sage_ops]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SageOpsError(f"pip wheel could not run: {e}") from None
    if out.returncode != 0:
        lines = [ln.strip() for ln in (out.stderr or out.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR:")]
        last = (errors or lines or [f"exit code {out.returncode}"])[-1]
        raise SageOpsError(f"pip wheel failed: {last}")
    return sorted(dest.glob("*.whl"))

"""A wheelhouse for nodes: the head's exact Ray and sage-ops with every dependency, as wheels,
so that a node installs with `pip install --no-index` (no index needed on the node, and the
versions cannot drift from the head's)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from sage_ops.errors import SageOpsError


def _editable_source() -> Path | None:
    """The source tree of an editable sage-ops install (its direct_url.json), if it is one."""
    for dist in metadata.distributions(name="sage-ops"):
        try:
            info = json.loads(dist.read_text("direct_url.json") or "null")
        except ValueError:
            continue
        if isinstance(info, dict) and info.get("dir_info", {}).get("editable") and info.get("url", "").startswith(
                "file://"):
            path = Path(info["url"][len("file://"):])
            if (path / "pyproject.toml").exists():
                return path
    return None


def sage_ops_requirement(source: Path | None = None) -> str:
    """What pip builds sage-ops from: a source tree (given, or the editable install's) or the
    released version of the installed distribution."""
    tree = source or _editable_source()
    if tree is not None:
        if not (Path(tree) / "pyproject.toml").is_file():
            raise SageOpsError(f"{tree} is not a sage-ops source tree (no pyproject.toml)")
        return str(Path(tree).resolve())
    return f"sage-ops=={metadata.version('sage-ops')}"


def build_wheelhouse(dest: Path, *, source: Path | None = None) -> list[Path]:
    """Fill `dest` with wheels of `ray[default]==<the head's ray>` and sage-ops plus all their
    dependencies (`pip wheel`, which uses the local pip cache and index); returns the wheels."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ray_version = metadata.version("ray")
    cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--progress-bar", "off",
           "-w", str(dest), f"ray[default]=={ray_version}", sage_ops_requirement(source)]
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

"""Check that the parts of sage-ops a user reaches for later import now: the TUI (textual), charts
(plotext), pipelines (cloudpickle) and SSH nodes (paramiko). They are loaded only when used, so
a broken or missing package would otherwise show first as a traceback in the middle of work.
Each is really imported (by name, so the CLI's own imports stay light): a package that is
present but fails to import is caught too."""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import re
import sys

from .base import Check, Probe, bad, ok

# feature -> (the modules its command imports, the package that provides them)
FEATURES: dict[str, tuple[tuple[str, ...], str]] = {
    "the TUI (sage-ops tui)": (("sage_ops.tui.app",), "textual"),
    "charts (sage-ops tui, stats)": (("plotext",), "plotext"),
    "pipelines (sage_ops.pipeline)": (("sage_ops.pipeline.environment", "cloudpickle"), "cloudpickle"),
    "SSH nodes (sage-ops nodes add)": (("sage_ops.nodes.ssh",), "paramiko"),
}


def _requirement(package: str) -> str:
    """sage-ops's own requirement on `package`, e.g. "textual>=8.2,<9" (the bare name if unknown)."""
    try:
        requires = metadata.requires("sage-ops") or []
    except metadata.PackageNotFoundError:
        return package
    for req in requires:
        spec = req.partition(";")[0].strip()
        name = re.match(r"[A-Za-z0-9_.-]+", spec)
        if name and name.group().lower() == package and "extra" not in req.partition(";")[2]:
            return spec
    return package


def import_error(modules: tuple[str, ...]) -> str | None:
    """Why the first of `modules` that fails cannot be imported, in one line; None if all import."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure to import is the finding (not only ImportError)
            return f"{exc.__class__.__name__}: {exc}"
    return None


def check_features(p: Probe) -> Check:
    """FAIL naming each feature that cannot import and why; the fix reinstalls its package."""
    broken = [(feature, why, package) for feature, (modules, package) in FEATURES.items()
              if (why := import_error(modules))]
    if not broken:
        return ok("features", "the TUI, charts, pipelines and SSH nodes import")
    detail = "; ".join(f"{feature} cannot import: {why}" for feature, why, _ in broken)
    fix = " && ".join(f"{sys.executable} -m pip install --force-reinstall '{_requirement(package)}'"
                      for _, _, package in broken)
    return bad("features", "FAIL", detail, fix)

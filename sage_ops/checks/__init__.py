"""`sage-ops doctor`'s checks, in the order they are reported: each says what it found and, when
something is wrong, the command that fixes it. The daemon is reached only through the client,
with short timeouts, so the report comes out in a second or two even with the daemon down."""

from __future__ import annotations

from collections.abc import Callable

from .base import Check, Probe, Target, bad
from .features import check_features
from .machine import check_config, check_disk, check_python, check_ray, check_ssh_agent
from .service import check_daemon, check_database, check_ray_head

__all__ = ["CHECKS", "Check", "run_checks"]

CHECKS: list[tuple[str, Callable[[Probe], Check]]] = [
    ("python", check_python), ("ray", check_ray), ("features", check_features), ("config", check_config),
    ("daemon", check_daemon), ("ray-head", check_ray_head), ("database", check_database), ("disk", check_disk),
    ("ssh-agent", check_ssh_agent),
]


def run_checks(ctx: Target) -> list[Check]:
    """Every check, in order; one that breaks becomes a FAIL line instead of a traceback."""
    probe = Probe(ctx)
    out: list[Check] = []
    for name, fn in CHECKS:
        try:
            out.append(fn(probe))
        except Exception as exc:  # noqa: BLE001 - the report must always come out whole
            out.append(bad(name, "FAIL", f"the check itself failed: {exc.__class__.__name__}: {exc}",
                            "run `sage-ops doctor --json` and report this line as a bug"))
    return out

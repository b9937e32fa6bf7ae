"""Line charts of the daemon's series as SVG, drawn on the server: no chart library to ship, and
the page reads without JavaScript. Pure: values in, path data and axis labels out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

W, H, LEFT, BOTTOM = 640, 180, 48, 22
WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "1d": 86400, "7d": 7 * 86400}


@dataclass(frozen=True)
class Line:
    label: str
    css: str  # the series' class: its colour in app.css
    path: str
    last: float


@dataclass
class Chart:
    title: str
    unit: str
    top: float = 0.0
    lines: list[Line] = field(default_factory=list)
    start: str = ""
    end: str = ""


def _scale(top: float) -> float:
    """A round value at or above `top` for the axis (1, 2, 5 x 10^n)."""
    if top <= 0:
        return 1.0
    step = 10 ** (len(str(int(top))) - 1) if top >= 1 else 0.1
    for m in (1, 2, 5, 10):
        if m * step >= top:
            return float(m * step)
    return float(10 * step)


def chart(title: str, unit: str, points: Sequence[Mapping[str, Any]],
          series: Sequence[tuple[str, str, Callable[[Mapping[str, Any]], float]]], top: float | None = None) -> Chart:
    """One chart: each of `series` (label, css class, value of a point) as a line over `points`;
    `top`: the axis's top (else a round value above the highest point)."""
    out = Chart(title, unit)
    if not points:
        return out
    values = [[max(0.0, float(f(p))) for p in points] for _, _, f in series]
    out.top = top or _scale(max((max(v) for v in values if v), default=0.0))
    n = len(points)
    for (label, css, _), vals in zip(series, values):
        xy = [(LEFT + (W - LEFT) * (i / max(1, n - 1)), (H - BOTTOM) * (1 - v / out.top)) for i, v in enumerate(vals)]
        path = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        out.lines.append(Line(label, css, path, vals[-1]))
    out.start, out.end = str(points[0]["time"])[11:16], str(points[-1]["time"])[11:16]
    return out


def per_second(key: str) -> Callable[[Mapping[str, Any]], float]:
    return lambda p: float(p.get(key, 0)) / max(float(p.get("seconds") or 1), 1e-9)


def share(used: str, total: str) -> Callable[[Mapping[str, Any]], float]:
    return lambda p: 100.0 * float(p.get(used, 0)) / float(p[total]) if p.get(total) else 0.0


def dashboard_charts(points: Sequence[Mapping[str, Any]]) -> list[Chart]:
    """The dashboard's charts, as the TUI's charts screen has them."""
    return [
        chart("Throughput", "jobs/s", points, [("finished", "s-ok", per_second("finished")),
                                              ("failed", "s-bad", per_second("failed")),
                                              ("submitted", "s-wait", per_second("submitted"))]),
        chart("Queue", "jobs", points, [("waiting", "s-wait", lambda p: float(p.get("queue_depth", 0))),
                                        ("running", "s-run", lambda p: float(p.get("running", 0)))]),
        chart("Utilization", "%", points, [("CPU", "s-run", share("cpu_used", "cpu_total")),
                                           ("GPU", "s-ok", share("gpu_used", "gpu_total")),
                                           ("memory", "s-wait", share("memory_used", "memory_total"))], top=100.0),
    ]

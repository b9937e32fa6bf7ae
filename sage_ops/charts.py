"""`stats --chart` and the TUI: the daemon's metrics series as terminal charts (plotext) or as plain
numbers for pipes. Pure functions of the series (no clock, no daemon), so the output is testable."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from .telemetry import MetricPoint, MetricsSeries

CHART_ROWS = 12  # rows per chart when the caller gives no height
_MIN_ROWS = 7  # title, frame and ticks take 4 of them; the last chart's time label one more, when room
_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
               172800, 604800, 1209600)
_lock = threading.Lock()  # plotext draws on one process-wide figure; the TUI may call from a worker thread


def span(secs: float) -> str:
    """Compact duration for axis ticks and messages: 90 -> '1m30s', 3600 -> '1h' (at most two units)."""
    secs = round(abs(secs))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            parts.append(f"{secs // size}{unit}")
            secs %= size
    return "".join(parts[:2]) or "0s"


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _end(series: MetricsSeries) -> datetime:
    """The time axis ends where the last interval ends: deterministic, unlike the clock."""
    last = series.points[-1]
    return _utc(last.time) + _seconds(last)


def _seconds(p: MetricPoint) -> timedelta:
    return timedelta(seconds=p.seconds)


def _pct(used: float, total: float) -> float:
    return 100.0 * used / total if total > 0 else 0.0


def _per_min(count: int, p: MetricPoint) -> float:
    return count * 60.0 / p.seconds if p.seconds > 0 else 0.0


def _x_ticks(lo: float, cols: int) -> tuple[list[float], list[str]]:
    """Ticks at whole 'ago' steps (-15m, -10m, ..., 0), as many as the width holds."""
    most = max(2, cols // 14)
    step = next((s for s in _NICE_STEPS if -lo / s <= most), _NICE_STEPS[-1])
    ticks = [-k * step for k in range(int(-lo // step), 0, -1)] + [0.0]
    return ticks, [f"-{span(t)}" if t else "0" for t in ticks]


Line = tuple[str, str, str, Callable[[MetricPoint], float]]  # label, marker, colour, value

_CHARTS: list[tuple[str, list[Line]]] = [
    ("jobs per minute", [("finished", "hd", "green", lambda p: _per_min(p.finished, p)),
                         ("failed", "braille", "red", lambda p: _per_min(p.failed, p))]),
    ("jobs queued and running (mean)", [("queued", "hd", "yellow", lambda p: p.queue_depth),
                                        ("running", "braille", "blue", lambda p: p.running)]),
    ("cluster use %", [("cpu", "hd", "cyan", lambda p: _pct(p.cpu_used, p.cpu_total)),
                       ("memory", "braille", "magenta", lambda p: _pct(p.memory_used, p.memory_total)),
                       ("gpu", "•", "green", lambda p: _pct(p.gpu_used, p.gpu_total))]),
]
_KEY = {"hd": "▚", "braille": "⢕"}  # what the marker looks like, for the key in the title


def charts(series: MetricsSeries, width: int, height: int | None = None, color: bool = True) -> str:
    """Three charts stacked, exactly `width` columns wide; no ANSI codes when color is False (or NO_COLOR)."""
    if not series.points:
        return f"no samples yet in the last {span(series.window_s)}"
    color = color and not os.environ.get("NO_COLOR")
    import plotext as plt  # here, not at the top: numbers() serves the CLI without it

    pts = series.points
    end = _end(series)
    xs = [(_utc(p.time) + _seconds(p) - end).total_seconds() for p in pts]
    lo = -max(series.window_s, -xs[0] + pts[0].seconds, series.step_s, 1.0)
    breaks = [i for i in range(1, len(pts)) if (_utc(pts[i].time) - _utc(pts[i - 1].time) - _seconds(pts[i - 1]))
              .total_seconds() > pts[i - 1].seconds / 2]  # a gap in sampling (daemon down) is not a line
    rows = max(_MIN_ROWS, (height or CHART_ROWS * len(_CHARTS)) // len(_CHARTS))
    gpu = any(p.gpu_total > 0 for p in pts)
    with _lock:
        fig = plt.figure
        try:
            fig.clear()
            plt.terminal.limit(False, False)  # the caller decides the size, not the terminal we run in
            fig.subplots(len(_CHARTS), 1)
            fig.plot_size(width, rows * len(_CHARTS))
            fig.theme("simple" if color else "colorless")
            for row, (title, lines) in enumerate(_CHARTS, start=1):
                sub = fig.subplot(row, 1)
                keys = []
                top = 1.0
                for label, mark, colour, value in (ln for ln in lines if gpu or ln[0] != "gpu"):
                    ys = [value(p) for p in pts]
                    top = max(top, *ys)
                    pixel = plt.pixel(foreground=colour) if color else None
                    sig = sub.signal(xs, ys, marker=plt.marker(mark, pixel)).lines()
                    for i in breaks:
                        sig.line(i, False)
                    sub.draw(sig)
                    keys.append(plt.colorize(f"  {_KEY.get(mark, mark)} {label}", pixel))
                wide = len(title) + 1 + sum(k.length() for k in keys) < width  # else the key alone
                sub.title(sum(keys[1:], plt.colorize(title + ":" if wide else "") + keys[0]))
                ticks, labels = _x_ticks(lo, width)
                sub.ruler("x").lim(lo, 0).ticks(ticks, labels)
                if title.endswith("%"):
                    sub.ruler("y").lim(0, 100).ticks([0, 25, 50, 75, 100])
                else:
                    sub.ruler("y").lim(0, top)
                if row == len(_CHARTS) and rows > _MIN_ROWS:  # one time label for the stack
                    label = f"time before {end:%Y-%m-%d %H:%M:%S} UTC (the end of the last sample)"
                    sub.label(label if len(label) < width - 6 else f"before {end:%H:%M:%S} UTC")
            text = fig.build().string(colorless=not color).removesuffix("\n")  # the caller prints the newline
        finally:
            fig.clear()
            plt.terminal.limit()
    return text


def numbers(series: MetricsSeries) -> str:
    """One fixed-column line per interval plus a summary: for pipes, awk and diffs (no colour, no units
    inside a field; memory in GiB)."""
    head = (f"{'time':<20} {'seconds':>7} {'submitted':>9} {'started':>7} {'finished':>8} {'failed':>6} "
            f"{'queue':>7} {'running':>7} {'cpu':>13} {'mem_gib':>15} {'gpu':>9}")
    out = [head]
    for p in series.points:
        out.append(f"{_utc(p.time):%Y-%m-%dT%H:%M:%SZ} {p.seconds:>7g} {p.submitted:>9} {p.started:>7} "
                   f"{p.finished:>8} {p.failed:>6} {p.queue_depth:>7.1f} {p.running:>7.1f} "
                   f"{_num(p.cpu_used) + '/' + _num(p.cpu_total):>13} "
                   f"{f'{p.memory_used / 2**30:.1f}/{p.memory_total / 2**30:.1f}':>15} "
                   f"{_num(p.gpu_used) + '/' + _num(p.gpu_total):>9}")
    pts = series.points
    secs = sum(p.seconds for p in pts)
    finished = sum(p.finished for p in pts)
    out.append(f"total {span(secs)} submitted={sum(p.submitted for p in pts)} started={sum(p.started for p in pts)} "
               f"finished={finished} failed={sum(p.failed for p in pts)} "
               f"finished_per_min={finished * 60 / secs if secs else 0:.2f} "
               f"peak_queue={max((p.queue_depth for p in pts), default=0):.1f}")
    return "\n".join(out)


def _num(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"

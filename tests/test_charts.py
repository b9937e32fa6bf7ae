"""sage_ops.charts on a synthetic, fixed series: no daemon, no Ray, no clock."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sage_ops.charts import charts, numbers
from sage_ops.telemetry import MetricPoint, MetricsSeries, NodeUsage
from sage_ops.units import parse_duration as parse_window

SNAPSHOTS = Path(__file__).parent / "snapshots"
ANSI = re.compile(r"\x1b\[")
GIB = 2**30
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
BURST = range(25, 35)  # intervals in which a batch of jobs finishes


def series(n: int = 60, gpu: bool = False) -> MetricsSeries:
    """n points at 5 s: the queue fills, drains in a burst of finished jobs, then idles; two nodes of 8 CPUs."""
    points = []
    for i in range(n):
        burst = i in BURST
        running = 8.0 if burst else (4.0 if i < BURST.start else 3.0)
        queue = 0.5 * i if i < BURST.start else (12.0 - 1.1 * (i - BURST.start) if burst else 1.0)
        a = NodeUsage(cpu_used=min(8.0, running * 1.5), cpu_total=8, memory_used=running * 2 * GIB,
                      memory_total=32 * GIB, gpu_used=1.0 if gpu and burst else 0.0, gpu_total=2.0 if gpu else 0.0)
        b = NodeUsage(cpu_used=running * 0.5, cpu_total=8, memory_used=4 * GIB, memory_total=32 * GIB)
        points.append(MetricPoint(
            time=T0 + timedelta(seconds=5 * i), seconds=5.0, submitted=2 if i < BURST.start else 0,
            started=2 if burst else (1 if i % 2 else 0), finished=8 if burst else (1 if i % 3 == 0 else 0),
            failed=1 if i in (30, 45) else 0, queue_depth=queue, running=running,
            cpu_used=a.cpu_used + b.cpu_used, cpu_total=16, memory_used=a.memory_used + b.memory_used,
            memory_total=64 * GIB, gpu_used=a.gpu_used, gpu_total=a.gpu_total, nodes={"node-a": a, "node-b": b}))
    return MetricsSeries(window_s=300, step_s=5, points=points)


def assert_snapshot(name: str, text: str) -> None:
    """Compare with tests/snapshots/<name> exactly; write it when absent (review new ones by eye)."""
    path = SNAPSHOTS / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8", newline="")
    assert text + "\n" == path.read_bytes().decode(), f"{name} changed; delete it to take the new one"


def test_chart_snapshot_100() -> None:
    out = charts(series(), 100, color=False)
    assert_snapshot("stats_chart_100.txt", out)
    assert out == charts(series(), 100, color=False)  # no clock, no state left behind


@pytest.mark.parametrize("width", [100, 60, 40])
def test_chart_fits_width(width: int) -> None:
    lines = charts(series(), width, color=False).splitlines()
    assert lines and all(len(line) <= width for line in lines)
    assert "jobs per minute" in lines[0] or width < 60


def test_chart_height_and_keys() -> None:
    out = charts(series(gpu=True), 100, height=45, color=False)
    assert len(out.splitlines()) == 45
    for key in ("finished", "failed", "queued", "running", "cpu", "memory", "gpu"):
        assert key in out
    assert "gpu" not in charts(series(), 100, color=False)  # no GPUs in the cluster: no GPU line
    assert "time before 2024-05-01 12:05:00 UTC" in out  # the end of the last interval


def test_chart_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert not ANSI.search(charts(series(), 100, color=False))
    assert ANSI.search(charts(series(), 100, color=True))
    monkeypatch.setenv("NO_COLOR", "1")
    assert not ANSI.search(charts(series(), 100, color=True))


def test_chart_empty_and_single_point() -> None:
    empty = MetricsSeries(window_s=900, step_s=5, points=[])
    assert charts(empty, 100) == "no samples yet in the last 15m"
    one = series(1)
    out = charts(one, 80, color=False)
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "time before 2024-05-01 12:00:05 UTC" in out


def test_chart_gap_in_sampling() -> None:
    s = series()
    s.points = s.points[:20] + s.points[40:]  # the daemon was down for 100 s
    assert len(charts(s, 100, color=False).splitlines()) == 36


def test_numbers() -> None:
    s = series()
    lines = numbers(s).splitlines()
    assert len(lines) == len(s.points) + 2
    head = lines[0].split()
    assert head == ["time", "seconds", "submitted", "started", "finished", "failed", "queue", "running", "cpu",
                    "mem_gib", "gpu"]
    rows = [dict(zip(head, line.split())) for line in lines[1:-1]]
    assert all(len(line.split()) == len(head) for line in lines[1:-1])
    assert rows[0]["time"] == "2024-05-01T12:00:00Z" and rows[-1]["time"] == "2024-05-01T12:04:55Z"
    assert [i for i, r in enumerate(rows) if r["finished"] == "8"] == list(BURST)  # the burst shows
    assert rows[BURST.start]["cpu"] == "12/16" and rows[BURST.start]["mem_gib"] == "20.0/64.0"
    assert len({len(line) for line in lines[1:-1]}) == 1  # fixed columns
    finished = sum(p.finished for p in s.points)
    assert lines[-1] == (f"total 5m submitted=50 started={sum(p.started for p in s.points)} finished={finished} "
                         f"failed=2 finished_per_min={finished / 5:.2f} peak_queue=12.0")


def test_numbers_empty() -> None:
    lines = numbers(MetricsSeries(window_s=60, step_s=5, points=[])).splitlines()
    assert len(lines) == 2 and lines[1].startswith("total 0s submitted=0")


@pytest.mark.parametrize(("text", "secs"), [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800),
                                            ("1w", 604800), ("300", 300), ("1.5h", 5400), (" 15m ", 900)])
def test_parse_window(text: str, secs: float) -> None:
    assert parse_window(text) == secs


@pytest.mark.parametrize("text", ["", "m", "15x", "-5m", "0", "0s", "1e3", "nan", "inf", "15mm", "h1"])
def test_parse_window_errors(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration") as err:
        parse_window(text)
    assert "\n" not in str(err.value)

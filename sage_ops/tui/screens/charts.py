"""Throughput, queue depth and cluster use over the last hour, as `sage-ops stats --chart` draws
them, updated live: the series is fetched again every metrics interval (the series' step), so a
new point shows as soon as the daemon has sampled it."""

from __future__ import annotations

from typing import Protocol

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static

from ...charts import span
from ...errors import SageOpsError
from ...telemetry import MetricsSeries
from ..messages import Failed
from ..widgets.chart import MetricsChart


class MetricsSource(Protocol):
    """Where the series comes from: the daemon's client, or fixed data for snapshot tests."""

    async def metrics_series(self, window: float = 3600) -> MetricsSeries: ...


def summary(series: MetricsSeries) -> Text:
    """The newest interval in numbers, for who wants a figure rather than a line."""
    if not series.points:
        return Text(f"no samples yet in the last {span(series.window_s)}", style="dim")
    p = series.points[-1]
    per_min = p.finished * 60 / p.seconds if p.seconds else 0.0
    cpu = f"{100 * p.cpu_used / p.cpu_total:.0f}%" if p.cpu_total else "-"
    out = Text(f"last {span(p.seconds)}: ", style="bold", no_wrap=True, overflow="ellipsis")
    out.append(f"{per_min:.1f} finished/min", style="green").append(f"  {p.failed} failed", style="red")
    out.append(f"  queue {p.queue_depth:.1f}", style="yellow").append(f"  running {p.running:.1f}", style="blue")
    return out.append(f"  cpu {cpu}", style="cyan")


class ChartsScreen(Screen):
    """The cluster's figures over `window` seconds (default the last hour)."""

    CSS_PATH = "../views.tcss"
    BINDINGS = [Binding("r", "reload", "Refresh"), Binding("escape", "back", "Back")]

    class Loaded(Message):
        def __init__(self, series: MetricsSeries) -> None:
            super().__init__()
            self.series = series

    def __init__(self, source: MetricsSource | None = None, window: float = 3600.0, refresh_s: float = 5.0) -> None:
        super().__init__(classes="charts-screen")
        self._given = source
        self.window = window
        self.refresh_s = refresh_s
        self._timer: Timer | None = None

    @property
    def source(self) -> MetricsSource:
        return self._given or self.app.client  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Cluster metrics[/] — last {span(self.window)}", classes="view-title")
        yield Static("", id="charts-summary", classes="status-line")
        yield MetricsChart(id="charts")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self._timer = self.set_interval(self.refresh_s, self.reload)

    @work(exclusive=True, group="charts-refresh")
    async def reload(self) -> None:
        try:
            self.post_message(self.Loaded(await self.source.metrics_series(self.window)))
        except SageOpsError as exc:
            self.post_message(Failed(exc.message))

    @on(Loaded)
    def _show(self, message: Loaded) -> None:
        series = message.series
        self.query_one(MetricsChart).series = series
        self.query_one("#charts-summary", Static).update(summary(series))
        step = min(60.0, max(1.0, series.step_s))
        if self._given is None and step != self.refresh_s:  # follow the daemon's sampling interval
            self.refresh_s = step
            if self._timer is not None:
                self._timer.stop()
            self._timer = self.set_interval(step, self.reload)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self.query_one("#charts-summary", Static).update(Text(message.text, style="bold red"))

    def action_reload(self) -> None:
        self.reload()

    def action_back(self) -> None:
        self.app.pop_screen()

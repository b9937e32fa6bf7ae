"""The daemon's metrics as terminal charts: the text `sage_ops.charts.charts()` draws for
`stats --chart`, sized to this widget and drawn again when it is resized, so the TUI and the CLI
show the same charts. plotext runs in a thread worker: a redraw never stalls the UI."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static
from textual.worker import get_current_worker

from ...charts import charts
from ...telemetry import MetricsSeries


class MetricsChart(VerticalScroll):
    """Throughput, queue depth and cluster use of a MetricsSeries (set `series` to update)."""

    DEFAULT_CSS = """
    MetricsChart { scrollbar-gutter: stable; scrollbar-size-vertical: 1; height: 1fr; }
    MetricsChart > Static { width: 1fr; height: auto; }
    """

    series: reactive[MetricsSeries | None] = reactive(None, always_update=True)

    def __init__(self, series: MetricsSeries | None = None, *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._drawn: tuple[object, ...] | None = None
        self.set_reactive(MetricsChart.series, series)

    def compose(self) -> ComposeResult:
        yield Static("waiting for the first samples…", classes="chart-text")

    def watch_series(self) -> None:
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Draw again if the series, the size or colour changed (a thread worker; the newest wins)."""
        series = self.series
        width = self.scrollable_content_region.width
        if series is None or width < 20:
            return
        key = (series, width, self.size.height, self.app.no_color)
        if key == self._drawn:  # the 5 s refresh often brings the same points: no redraw
            return
        self._drawn = key
        self._draw(series, width, self.size.height, not self.app.no_color)  # charts() keeps its minimum

    @work(thread=True, exclusive=True, group="chart-draw")
    def _draw(self, series: MetricsSeries, width: int, height: int, color: bool) -> None:
        text = charts(series, width, height, color=color)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, text, color)

    def _show(self, text: str, color: bool) -> None:
        self.query_one(Static).update(Text.from_ansi(text, no_wrap=True) if color else Text(text, no_wrap=True))

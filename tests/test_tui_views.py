"""The TUI's nodes, add-node, charts, graph and submit screens, hosted in a small app of this file:
against a real daemon (real Ray) through Pilot, and as SVG snapshots fed fixed data (the only
fakes here: a daemon's live figures would change every run)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import until
from rich.text import Text
from textual.app import App
from textual.screen import Screen
from textual.widgets import Button, DataTable, Input, Static

from sage_ops.client import AsyncJobManagerClient
from sage_ops.cluster import NodeView, PoolView
from sage_ops.lifecycle import JobStatus
from sage_ops.telemetry import MetricPoint, MetricsSeries, NodeUsage
from sage_ops.tui.screens.add_node import AddNodeScreen
from sage_ops.tui.screens.charts import ChartsScreen
from sage_ops.tui.screens.graph import GraphScreen
from sage_ops.tui.screens.nodes import NodesScreen
from sage_ops.tui.screens.submit import FIELDS, SubmitScreen, build_spec
from sage_ops.tui.widgets.bars import usage_text
from sage_ops.tui.widgets.chart import MetricsChart
from sage_ops.views import GraphNode, GraphView

GIB = 2**30
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


class ViewsApp(App[None]):
    """Hosts one screen of this file's (the real app shell is tested elsewhere)."""

    def __init__(self, make: Callable[[], Screen[Any]], address: str | None = None) -> None:
        super().__init__()
        self.client = AsyncJobManagerClient(address) if address else None
        self.make = make
        self.results: list[Any] = []

    def on_mount(self) -> None:
        self.push_screen(self.make(), self.results.append)


def app_for(daemon: Any, make: Callable[[], Screen[Any]]) -> ViewsApp:
    return ViewsApp(make, f"unix://{daemon.socket}")


def text_of(static: Static) -> str:
    content = static.content
    return content.plain if isinstance(content, Text) else str(content)


# -- fixed data for the snapshots --------------------------------------------------------------
class FixedNodes:
    def __init__(self, pools: list[PoolView] | None = None) -> None:
        self.pools = pools or []

    async def list_pools(self) -> list[PoolView]:
        return self.pools

    async def list_nodes(self) -> list[NodeView]:
        return [
            NodeView(name="head", state="UP", managed=False, head=True, cpu_used=2, cpu_total=4,
                     memory_used=3 * GIB, memory_total=8 * GIB, running_jobs=2, heartbeat_age_s=1.2),
            NodeView(name="gpu-1", state="UP", managed=True, host="10.0.0.5", cpu_used=15, cpu_total=16,
                     memory_used=50 * GIB, memory_total=64 * GIB, gpu_used=1, gpu_total=2, running_jobs=7,
                     heartbeat_age_s=0.4),
            NodeView(name="cpu-2", state="DRAINING", managed=True, host="10.0.0.6", cpu_used=1, cpu_total=8,
                     memory_used=1 * GIB, memory_total=16 * GIB, running_jobs=1, heartbeat_age_s=3,
                     detail="no new jobs"),
            NodeView(name="cpu-3", state="FAILED", managed=True, host="10.0.0.7",
                     detail="connect: host key of 10.0.0.7 is unknown"),
        ]


def fixed_series(n: int = 60) -> MetricsSeries:
    """An hour of 1-minute points: a queue that fills, drains in a burst of finished jobs, then idles."""
    points = []
    for i in range(n):
        burst = 20 <= i < 30
        running = 4.0 if burst else 1.0 if i < 45 else 0.0
        points.append(MetricPoint(
            time=T0 + timedelta(minutes=i), seconds=60.0, submitted=2 if i < 20 else 0, finished=6 if burst else 0,
            failed=1 if i == 25 else 0, queue_depth=0.5 * i if i < 20 else max(0.0, 10 - (i - 20)), running=running,
            cpu_used=running, cpu_total=4, memory_used=running * GIB, memory_total=8 * GIB,
            nodes={"head": NodeUsage(cpu_used=running, cpu_total=4)}))
    return MetricsSeries(window_s=3600, step_s=60, points=points)


class FixedSeries:
    async def metrics_series(self, window: float = 3600) -> MetricsSeries:
        return fixed_series()


async def _chart_drawn(pilot: Any) -> None:
    await until(pilot, lambda: "jobs per minute" in text_of(pilot.app.screen.query_one(MetricsChart).query_one(Static)))
    await pilot.app.workers.wait_for_complete()


async def _nodes_listed(pilot: Any) -> None:
    await until(pilot, lambda: pilot.app.screen.query_one(DataTable).row_count == 4)


def test_nodes_snapshot(snap_compare: Any) -> None:
    assert snap_compare(ViewsApp(lambda: NodesScreen(FixedNodes(), refresh_s=3600)), terminal_size=(80, 24),
                        run_before=_nodes_listed)


def test_charts_snapshot(snap_compare: Any) -> None:
    assert snap_compare(ViewsApp(lambda: ChartsScreen(FixedSeries(), refresh_s=3600)), terminal_size=(100, 32),
                        run_before=_chart_drawn)


class FixedGraph:
    """A small pipeline: extract -> (clean, features) -> train, train running on the critical path."""

    async def get_job_graph(self, job_id: str) -> GraphView:
        S = JobStatus
        nodes = [GraphNode(id="a1", name="extract", status=S.COMPLETED, duration=42, critical=True),
                 GraphNode(id="b2", name="clean", status=S.COMPLETED, dependencies=["a1"], duration=75, critical=True),
                 GraphNode(id="c3", name="features", status=S.FAILED, dependencies=["a1"], duration=12),
                 GraphNode(id="d4", name="train", status=S.RUNNING, dependencies=["b2", "c3"], duration=300,
                           critical=True)]
        return GraphView(root="d4", order=[n.id for n in nodes], critical_path=["a1", "b2", "d4"], total=4, done=3,
                         completed=2, running=1, pending=0, failed=1, cancelled=0, nodes=nodes)


async def _graph_drawn(pilot: Any) -> None:
    await until(pilot, lambda: getattr(pilot.app.screen, "graph", None) is not None)
    await pilot.pause()


def test_graph_snapshot(snap_compare: Any) -> None:
    assert snap_compare(ViewsApp(lambda: GraphScreen("d4", FixedGraph(), refresh_s=3600)), terminal_size=(80, 24),
                        run_before=_graph_drawn)


def test_submit_form_snapshot(snap_compare: Any) -> None:
    async def run_before(pilot: Any) -> None:
        await pilot.pause()
        await pilot.press(*"sleep 60")  # the command field has the focus

    assert snap_compare(ViewsApp(SubmitScreen), terminal_size=(80, 24), run_before=run_before)


def test_add_node_form_snapshot(snap_compare: Any) -> None:
    async def run_before(pilot: Any) -> None:
        await pilot.pause()
        await pilot.press(*"worker-1")

    assert snap_compare(ViewsApp(AddNodeScreen), terminal_size=(80, 24), run_before=run_before)


# -- no daemon ---------------------------------------------------------------------------------
def test_usage_bar_thresholds_and_spec_parsing() -> None:
    assert usage_text(1, 4, width=4).plain == "█░░░ 1/4"
    assert [s.style for s in usage_text(3.8, 4, width=4).spans][0] == "bold red"
    assert usage_text(0, 0).plain == "-"
    spec = build_spec({"command": "python -c 'print(1)'", "script": "", "name": "x", "cpu": "0.5", "gpu": "",
                       "memory": "1GB", "custom": "A=1, B=2.5", "dependencies": "j1, j2", "retries": "2",
                       "priority": "5"})
    assert spec["command"] == ["python", "-c", "print(1)"] and spec["dependencies"] == ["j1", "j2"]
    assert spec["resources"] == {"cpu": 0.5, "memory": "1GB", "custom_resources": {"A": 1.0, "B": 2.5}}
    assert spec["retry_policy"] == {"max_retries": 2} and spec["priority"] == 5
    with pytest.raises(ValueError, match="command or a script"):
        build_spec(dict.fromkeys(("command", "script", "name", "cpu", "gpu", "memory", "custom", "dependencies",
                                  "retries", "priority"), ""))


async def test_no_color_chart_has_no_styles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = ViewsApp(lambda: ChartsScreen(FixedSeries(), refresh_s=3600))
    async with app.run_test(size=(100, 32)) as pilot:
        await _chart_drawn(pilot)
        content = app.screen.query_one(MetricsChart).query_one(Static).content
        assert isinstance(content, Text) and not content.spans and "\x1b" not in content.plain


async def test_submit_form_local_errors_are_one_line(tmp_path: Any) -> None:
    app = ViewsApp(SubmitScreen, f"unix://{tmp_path}/no-daemon.sock")  # the spec is refused before any call
    async with app.run_test(size=(80, 24)) as pilot:
        error = app.screen.query_one("#form-error", Static)
        await pilot.click("#do-submit")
        await until(pilot, lambda: "command or a script" in text_of(error))
        app.screen.query_one("#command", Input).value = "true"
        app.screen.query_one("#name", Input).value = "two words"
        app.screen.query_one("#name", Input).focus()
        await pilot.press("enter")  # enter in any field submits (the button is still in its 0.2 s press effect)
        await until(pilot, lambda: text_of(error).startswith("name:"))
        assert "\n" not in text_of(error) and not app.results


def form(**given: str) -> dict[str, str]:
    """The submit form's fields, empty but for `given`."""
    return {field: given.get(field, "") for field, _, _ in FIELDS}


def test_submit_form_takes_dependency_conditions_as_the_cli_does() -> None:
    spec = build_spec(form(command="true", dependencies="a1, notok:b2, any:c3"))
    assert (spec["dependencies"], spec["after_notok"], spec["after_any"]) == (["a1"], ["b2"], ["c3"])


def test_submit_form_takes_an_array() -> None:
    assert build_spec(form(command="echo {index}", array="0-9%2"))["array"] == "0-9%2"


def test_submit_form_takes_what_the_job_brings_along() -> None:
    spec = build_spec(form(command="python t.py", workdir="src", pip="numpy<3 requests", venv="/v", image="py:3"))
    assert [spec[k] for k in ("workdir", "pip", "venv", "image")] == ["src", ["numpy<3", "requests"], "/v", "py:3"]


def test_submit_form_refuses_an_unknown_condition_in_one_line() -> None:
    with pytest.raises(ValueError, match="after: 'maybe:x1': a condition is ok:, notok: or any:"):
        build_spec(form(command="true", dependencies="maybe:x1"))


async def test_the_nodes_screen_shows_each_elastic_pool_in_a_line() -> None:
    pool = PoolView(name="gpu", hosts=["h1", "h2"], min=0, max=2, idle_timeout=600, up=1, idle=1, desired=1,
                    last="drain h1: idle for 600s (idle_timeout 600s)")
    app = ViewsApp(lambda: NodesScreen(FixedNodes([pool]), refresh_s=3600))
    async with app.run_test(size=(120, 30)) as pilot:
        line = app.screen.query_one("#pools-line", Static)
        await until(pilot, lambda: line.display and text_of(line))
        assert text_of(line) == ("pool gpu: 1 up, 0 joining, 1 idle (min 0, max 2); wants 1, 0 job(s) waiting; "
                                 "last: drain h1: idle for 600s (idle_timeout 600s)")


# -- a real daemon -----------------------------------------------------------------------------
async def test_submit_form_submits_a_job(daemon: Any) -> None:
    app = app_for(daemon, SubmitScreen)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press(*"echo from-the-tui")
        app.screen.query_one("#name", Input).value = "tui-submitted"
        app.screen.query_one("#cpu", Input).value = "0.5"
        app.screen.query_one("#priority", Input).value = "3"
        await pilot.click("#do-submit")
        job_id = await until(pilot, lambda: app.results and app.results[0])
    view = daemon.client().get_job(job_id)
    assert view.name == "tui-submitted" and view.priority == 3 and view.spec.command == ["echo", "from-the-tui"]
    assert view.spec.resources.cpu == 0.5


async def test_submit_form_shows_daemon_rejection(daemon: Any) -> None:
    app = app_for(daemon, SubmitScreen)
    async with app.run_test(size=(120, 40)) as pilot:
        app.screen.query_one("#command", Input).value = "true"
        app.screen.query_one("#dependencies", Input).value = "doesnotexist"
        await pilot.click("#do-submit")
        error = app.screen.query_one("#form-error", Static)
        await until(pilot, lambda: "unknown dependency" in text_of(error))
        assert not app.results and not app.screen.query_one("#do-submit", Button).disabled


async def test_graph_of_a_chain(daemon: Any) -> None:
    client = daemon.client()
    a = client.submit_job({"name": "a", "command": ["true"]}).id
    b = client.submit_job({"name": "b", "command": ["true"], "dependencies": [a]}).id
    c = client.submit_job({"name": "c", "command": ["true"], "dependencies": [b]}).id
    app = app_for(daemon, lambda: GraphScreen(c, refresh_s=0.5))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, GraphScreen)
        await until(pilot, lambda: screen.graph is not None and screen.graph.done == 3, timeout=60)
        labels = {job_id: item.label.plain for job_id, item in screen._items.items()}
        assert set(labels) == {a, b, c}
        assert all(JobStatus.COMPLETED.value in label for label in labels.values())
        assert screen._items[c].parent is screen._items[b] and screen._items[b].parent is screen._items[a]
        assert "3/3 done" in text_of(screen.query_one("#graph-counts", Static))
        assert "a -> b -> c" in text_of(screen.query_one("#graph-critical", Static))


async def test_nodes_screen_lists_the_head(daemon: Any) -> None:
    app = app_for(daemon, NodesScreen)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one(DataTable)
        await until(pilot, lambda: table.row_count >= 1)
        rows = [[c.plain if isinstance(c, Text) else str(c) for c in table.get_row_at(i)]
                for i in range(table.row_count)]
        head = next(r for r in rows if "(head)" in r[0])
        assert head[1] == "UP" and "/4" in head[2] and ("█" in head[2] or "░" in head[2])
        table.move_cursor(row=rows.index(head))
        await pilot.press("d")  # the head was not added by sage-ops: the daemon refuses, in one line
        await until(pilot, lambda: len(app.screen_stack) == 3)
        await pilot.press("y")
        status = app.screen.query_one("#nodes-status", Static)
        await until(pilot, lambda: "not added by sage-ops" in text_of(status))


async def test_add_node_invalid_host_is_one_line(daemon: Any) -> None:
    app = app_for(daemon, AddNodeScreen)
    async with app.run_test(size=(120, 40)) as pilot:
        app.screen.query_one("#host", Input).value = "not a host!"
        await pilot.click("#add")
        error = app.screen.query_one("#form-error", Static)
        await until(pilot, lambda: text_of(error))
        assert "host" in text_of(error) and "\n" not in text_of(error) and not app.results


async def test_charts_screen_renders_live(new_daemon: Any) -> None:
    d = new_daemon({"metrics": {"interval": 1}})
    d.start()
    client = d.client()
    for _ in range(2):
        client.submit_command(["true"])
    deadline = time.monotonic() + 30
    while len(client.metrics_series(3600).points) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    app = app_for(d, ChartsScreen)
    async with app.run_test(size=(120, 40)) as pilot:
        await _chart_drawn(pilot)
        screen = app.screen
        assert isinstance(screen, ChartsScreen) and screen.refresh_s == 1  # follows the daemon's interval
        assert "finished/min" in text_of(screen.query_one("#charts-summary", Static))
        text = text_of(screen.query_one(MetricsChart).query_one(Static))
        assert "cluster use %" in text and "jobs queued and running" in text

"""The graph screen of a pipeline job: one row per operator with its records and rates, updated in
place at each refresh. Like test_tui_views' snapshots, the screen is fed by a fixed source (the only
fake), but what it serves is real: the plan LocalEnvironment compiles and the metrics of a run."""

from __future__ import annotations

from typing import Any

from conftest import until
from rich.text import Text
from test_tui_views import FixedGraph, ViewsApp, text_of
from textual.widgets import DataTable, Static, Tree

from sage_ops.lifecycle import JobStatus
from sage_ops.pipeline import LocalEnvironment
from sage_ops.pipeline.shapes import OperatorMetrics, PipelinePlan, PipelineView
from sage_ops.render import OPERATOR_COLUMNS
from sage_ops.tui.screens.graph import GraphScreen
from sage_ops.tui.widgets.operator_table import OperatorTable, columns_for
from sage_ops.views import GraphNode, GraphView


def tokenize(x: int) -> int:
    return x * 2


def is_even(x: int) -> bool:
    return x % 2 == 0


def build(env: LocalEnvironment, sink: Any = print) -> None:
    """source -> map x2 -> filter (fused with the map) -> sink: 4 operators in 3 tasks, 4 actors."""
    env.from_collection(range(10)).map(tokenize, parallelism=2).filter(is_even, parallelism=2).sink(sink)


def plan() -> PipelinePlan:
    env = LocalEnvironment("wordcount")
    build(env)
    return env.plan()


def metrics(scale: int) -> list[OperatorMetrics]:
    """Counts chosen so every operator's row differs: source emits, map passes, filter halves."""
    n = 1000 * scale
    return [OperatorMetrics(id=0, records_out=n, rate_out=250.0 * scale, busy_seconds=0.5 * scale),
            OperatorMetrics(id=1, records_in=n, records_out=n, rate_in=250.0 * scale, rate_out=250.0 * scale,
                            busy_seconds=1.25 * scale, backpressure_seconds=0.1 * scale),
            OperatorMetrics(id=2, records_in=n, records_out=n // 2, rate_in=250.0 * scale, rate_out=125.0 * scale,
                            busy_seconds=0.75 * scale),
            OperatorMetrics(id=3, records_in=n // 2, rate_in=125.0 * scale, busy_seconds=2.0 * scale)]


class PipelineGraph:
    """get_job_graph of a pipeline job `p1`, alone or after two jobs; `view` is what the next
    refresh serves (the test changes it as a running job's metrics would)."""

    def __init__(self, view: PipelineView, dependencies: bool = False) -> None:
        self.view = view
        self.dependencies = dependencies

    async def get_job_graph(self, job_id: str) -> GraphView:
        S = JobStatus
        if not self.dependencies:
            nodes = [GraphNode(id="p1", name="wordcount", status=S.RUNNING, duration=95, critical=True)]
            return GraphView(root="p1", order=["p1"], critical_path=["p1"], total=1, done=0, completed=0, running=1,
                             pending=0, failed=0, cancelled=0, nodes=nodes, pipeline=self.view)
        nodes = [GraphNode(id="a1", name="extract", status=S.COMPLETED, duration=42, critical=True),
                 GraphNode(id="b2", name="clean", status=S.COMPLETED, duration=30),
                 GraphNode(id="p1", name="wordcount", status=S.RUNNING, dependencies=["a1", "b2"], duration=95,
                           critical=True)]
        return GraphView(root="p1", order=["a1", "b2", "p1"], critical_path=["a1", "p1"], total=3, done=2,
                         completed=2, running=1, pending=0, failed=0, cancelled=0, nodes=nodes, pipeline=self.view)


def rows(table: DataTable[Any]) -> dict[str, dict[str, str]]:
    """Each operator's shown cells as text, by operator id and column."""
    names = [str(c.key.value) for c in table.ordered_columns]
    out = {}
    for row in table.ordered_rows:
        cells = table.get_row(row.key)
        out[str(row.key.value)] = {n: c.plain if isinstance(c, Text) else str(c) for n, c in zip(names, cells)}
    return out


async def _loaded(pilot: Any) -> GraphScreen:
    screen = pilot.app.screen
    assert isinstance(screen, GraphScreen)
    await until(pilot, lambda: screen.graph is not None)
    await pilot.pause()
    return screen


async def test_operators_and_live_counts() -> None:
    source = PipelineGraph(PipelineView(plan=plan(), metrics=metrics(1), attempt=1))
    app = ViewsApp(lambda: GraphScreen("p1", source, refresh_s=3600))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await _loaded(pilot)
        operators = screen.query_one(OperatorTable)
        table = operators.table
        assert operators.display and not screen.query_one(Tree).display  # a pipeline alone: no tree
        assert table.has_focus
        assert [str(c.key.value) for c in table.ordered_columns] == list(OPERATOR_COLUMNS)  # 120 columns: all
        shown = rows(table)
        assert list(shown) == ["0", "1", "2", "3"]
        assert [shown[i]["OPERATOR"] for i in shown] == ["Source: CollectionSource", "Map: tokenize",
                                                          "Filter: is_even", "Sink: print"]
        assert [(shown[i]["IN"], shown[i]["OUT"]) for i in shown] == [("0", "1.0k"), ("1.0k", "1.0k"),
                                                                      ("1.0k", "500"), ("500", "0")]
        assert [(shown[i]["IN/S"], shown[i]["OUT/S"]) for i in shown] == [("0", "250"), ("250", "250"),
                                                                          ("250", "125"), ("125", "0")]
        assert [shown[i]["TASK"] for i in shown] == ["t0", "t1", "t1", "t2"]
        assert text_of(operators.query_one(".operator-summary", Static)) == ("3 tasks, 4 actors, "
                                                                             "metrics of attempt 1")
        tasks = text_of(operators.query_one(".operator-tasks", Static))
        assert "t1 x2: Map: tokenize -> Filter: is_even" in tasks
        assert "pipeline wordcount RUNNING" in text_of(screen.query_one("#graph-critical", Static))

        await pilot.press("down", "down")
        assert table.cursor_row == 2
        columns = list(table.ordered_columns)
        source.view = PipelineView(plan=source.view.plan, metrics=metrics(3), attempt=1)
        await pilot.press("r")
        await until(pilot, lambda: rows(table)["0"]["OUT"] == "3.0k")
        shown = rows(table)
        assert [(shown[i]["IN"], shown[i]["OUT"]) for i in shown] == [("0", "3.0k"), ("3.0k", "3.0k"),
                                                                      ("3.0k", "1.5k"), ("1.5k", "0")]
        assert [shown[i]["OUT/S"] for i in shown] == ["750", "750", "375", "0"]
        assert table.cursor_row == 2 and operators.highlighted_id() == "2"  # updated in place
        assert list(table.ordered_columns) == columns


async def test_counts_of_a_real_run() -> None:
    """The metrics a LocalEnvironment run reports, shown as the daemon would serve them."""
    out: list[int] = []
    env = LocalEnvironment("wordcount")
    build(env, out.append)
    view = env.execute(timeout=60)
    assert sorted(out) == [2 * i for i in range(10)]  # every double is even
    app = ViewsApp(lambda: GraphScreen("p1", PipelineGraph(view), refresh_s=3600))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _loaded(pilot)
        shown = rows(screen.query_one(OperatorTable).table)
        assert {i: (r["IN"], r["OUT"]) for i, r in shown.items()} == {
            "0": ("0", "10"), "1": ("10", "10"), "2": ("10", "10"), "3": ("10", "10")}


async def test_pipeline_with_dependencies_shows_tree_and_operators() -> None:
    source = PipelineGraph(PipelineView(plan=plan()), dependencies=True)
    app = ViewsApp(lambda: GraphScreen("p1", source, refresh_s=3600))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _loaded(pilot)
        tree = screen.query_one(Tree)
        operators = screen.query_one(OperatorTable)
        assert tree.display and operators.display and tree.has_focus
        assert {tree.get_node_at_line(i).data for i in range(3)} == {"a1", "b2", "p1"}  # type: ignore[union-attr]
        assert operators.table.row_count == 4
        assert text_of(operators.query_one(".operator-summary", Static)) == "3 tasks, 4 actors, no metrics yet"
        assert "extract -> wordcount" in text_of(screen.query_one("#graph-critical", Static))
        assert operators.region.y < tree.region.y  # the operators, then the jobs around


async def test_a_job_that_is_no_pipeline_has_no_operators() -> None:
    app = ViewsApp(lambda: GraphScreen("d4", FixedGraph(), refresh_s=3600))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _loaded(pilot)
        assert not screen.query_one(OperatorTable).display
        assert screen.query_one(Tree).display and screen.query_one(Tree).has_focus


def test_narrow_terminals_keep_records_and_rates() -> None:
    view = PipelineView(plan=plan(), metrics=metrics(1))
    from sage_ops.render import operator_rows

    wide = [name for name, _ in columns_for(200, operator_rows(view))]
    assert wide == list(OPERATOR_COLUMNS)
    narrow = columns_for(80, operator_rows(view))
    assert [name for name, _ in narrow] == ["#", "OPERATOR", "IN", "OUT", "IN/S", "OUT/S", "BACKPRESSURE"]
    assert dict(narrow)["OPERATOR"] == len("Source: CollectionSource")
    tiny = dict(columns_for(40, operator_rows(view)))
    assert list(tiny) == ["#", "OPERATOR", "IN", "OUT", "OUT/S"] and tiny["OPERATOR"] == 12


def test_pipeline_graph_snapshot(snap_compare: Any) -> None:
    source = PipelineGraph(PipelineView(plan=plan(), metrics=metrics(12), attempt=2))
    assert snap_compare(ViewsApp(lambda: GraphScreen("p1", source, refresh_s=3600)), terminal_size=(80, 24),
                        run_before=_loaded)

"""A pipeline job's operators: one row each with where it runs and what it did (records in/out,
rates, busy and backpressure time), then its fused tasks. The cells are render.py's (the CLI's
`sage-ops graph` table); `show` updates them in place, so a live job can be watched with the
cursor kept where it is."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.widgets import DataTable, Static

from ...pipeline.shapes import PipelineView
from ...render import OPERATOR_COLUMNS, operator_rows, task_lines
from .columns import fit, used

NUMERIC = {"#", "PAR", "IN", "OUT", "IN/S", "OUT/S", "BUSY", "BACKPRESSURE"}
#: the narrowest a column gets (counts like 12.3k and times like 123.4s do not widen it as they grow)
MIN_WIDTH = {"IN": 6, "OUT": 6, "IN/S": 6, "OUT/S": 6, "BUSY": 6, "BACKPRESSURE": 6}
#: what a narrow terminal hides first (the task lines below the table say task and parallelism);
#: #, OPERATOR, IN, OUT and OUT/S always stay
HIDE_FIRST = ["INPUT", "TASK", "PAR", "BUSY", "BACKPRESSURE", "IN/S"]
NAME_MIN, NAME_MAX = 12, 32
INDEX = {name: i for i, name in enumerate(OPERATOR_COLUMNS)}

Layout = tuple[tuple[str, int], ...]


def columns_for(width: int, rows: list[tuple[str, ...]]) -> Layout:
    """(column, width) of the columns that fit `width` cells; the operator's name shrinks last."""
    natural = {name: max(len(name), MIN_WIDTH.get(name, 0), *(len(r[INDEX[name]]) for r in rows))
               for name in OPERATOR_COLUMNS}
    natural["OPERATOR"] = min(natural["OPERATOR"], NAME_MAX)
    shown = fit(list(natural.items()), HIDE_FIRST, width)
    over = used(shown) - width
    if over > 0:
        natural["OPERATOR"] = max(NAME_MIN, natural["OPERATOR"] - over)
    return tuple((name, natural[name]) for name, _ in shown)


def cell(column: str, value: str) -> Text:
    return Text(value, justify="right" if column in NUMERIC else "left", no_wrap=True, overflow="ellipsis")


def summary(p: PipelineView) -> str:
    """`3 tasks, 4 actors`, and whose metrics they are."""
    line = f"{len(p.plan.tasks)} tasks, {p.plan.actors()} actors"
    if not p.metrics:
        return line + ", no metrics yet"
    return line + (f", metrics of attempt {p.attempt}" if p.attempt else "")


class OperatorRows(DataTable[Any]):
    """A DataTable as tall as its rows from the moment they are added: DataTable measures its
    rows only when idle, after the layout of a table that has just been shown (height 0 till the
    next layout)."""

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return sum(row.height for row in self.rows.values()) + (self.header_height if self.show_header else 0)


class OperatorTable(Vertical):
    """The operators of a PipelineView (a DataTable keyed by operator id), a summary line and the
    fused tasks. Call `show` with each fresh view."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline: PipelineView | None = None
        self._layout: Layout = ()
        self._rows: dict[str, tuple[str, ...]] = {}

    def compose(self) -> ComposeResult:
        yield OperatorRows(cursor_type="row", zebra_stripes=True, classes="operator-rows")
        yield Static("", classes="operator-summary")
        yield Static("", classes="operator-tasks")

    @property
    def table(self) -> OperatorRows:
        return self.query_one(OperatorRows)

    def show(self, p: PipelineView) -> None:
        self.pipeline = p
        self._fill(operator_rows(p))
        self.query_one(".operator-summary", Static).update(Text(summary(p), no_wrap=True, overflow="ellipsis"))
        tasks = Text("\n".join(f"  {line}" for line in task_lines(p)), no_wrap=True, overflow="ellipsis")
        self.query_one(".operator-tasks", Static).update(tasks)

    def on_resize(self) -> None:
        if self.pipeline is not None:
            self._fill(operator_rows(self.pipeline))

    def highlighted_id(self) -> str | None:
        """The operator id of the row under the cursor."""
        table = self.table
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _fill(self, rows: list[tuple[str, ...]]) -> None:
        """Change only the cells that changed when the operators and columns are the same; else
        draw the table again, the cursor on the same operator (or the same row) as before."""
        table = self.table
        layout = columns_for(self.size.width or self.app.size.width, rows)
        ids = [r[0] for r in rows]
        if layout == self._layout and ids == list(self._rows):
            for r in rows:
                before = self._rows[r[0]]
                for name, _ in layout:
                    if r[INDEX[name]] != before[INDEX[name]]:
                        table.update_cell(r[0], name, cell(name, r[INDEX[name]]))
        else:
            keep, at = self.highlighted_id(), table.cursor_row
            table.clear(columns=True)
            for name, width in layout:
                table.add_column(cell(name, name), width=width, key=name)
            for r in rows:
                table.add_row(*(cell(name, r[INDEX[name]]) for name, _ in layout), key=r[0])
            if rows:
                table.move_cursor(row=ids.index(keep) if keep in ids else min(at, len(rows) - 1), animate=False)
        self._layout = layout
        self._rows = {r[0]: r for r in rows}

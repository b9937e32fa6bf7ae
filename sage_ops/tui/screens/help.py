"""Every key of the app and of the screen it was opened from, with what it does."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static


class HelpScreen(ModalScreen[None]):
    """`rows` are (scope, keys, description), gathered by the app when `?` is pressed."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, title: str, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.heading, self.rows = title, rows

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(f"Keys — {self.heading}   (escape closes)", id="help-title", markup=False)
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True, id="help-table")
            table.add_columns("where", "key", "action")
            table.add_rows(self.rows)
            yield table

    def action_close(self) -> None:
        self.dismiss(None)

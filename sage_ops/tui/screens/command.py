"""The `:` command line, as in k9s and vi: a word (or any unique start of one) runs a command.
The app knows the commands (app.COMMAND_LINE); this screen only reads the line."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Input


class CommandLine(ModalScreen[str | None]):
    """Dismissed with the line typed (enter), or None (escape)."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, commands: list[str]) -> None:
        super().__init__()
        self.commands = commands

    def compose(self) -> ComposeResult:
        yield Input(placeholder=" ".join(f":{c}" for c in self.commands) + "   (enter runs, escape closes)",
                    id="command-line")

    @on(Input.Submitted, "#command-line")
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_close(self) -> None:
        self.dismiss(None)

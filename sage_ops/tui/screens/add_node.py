"""Add a machine to the cluster over SSH: a form, then the five bootstrap steps live from the
daemon's progress stream. The daemon validates and does the work; a refusal shows as one line in
the form, so the user fixes a field and tries again without losing the rest."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar, Static

from ...cluster import NodeProgress
from ...errors import SageOpsError
from ...nodes.base import STEPS
from ..messages import Failed

# (input id, label, placeholder): the NodeAdd fields a person fills in most
FIELDS = (("host", "host", "worker-1 or 10.0.0.5 (required)"), ("user", "user", "the daemon's user"),
          ("port", "port", "22"), ("key_file", "key file", "/root/.ssh/id_ed25519 (default: agent)"),
          ("name", "name", "default: the host"), ("resources", "resources", '{"TPU": 1}'),
          ("wheel_dir", "wheel dir", "/srv/wheels (install offline)"))
MARKS = {"start": ("…", "yellow"), "done": ("✓", "green"), "skip": ("✓", "dim green"), "fail": ("✗", "bold red")}


def step_line(step: str, state: str | None = None, detail: str = "") -> Text:
    """`✓ connect  detail`: one line per bootstrap step (a step not reached yet shows a dot)."""
    mark, style = MARKS.get(state or "", ("·", "dim"))
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(f"{mark} ", style=style).append(f"{step:<13}", style=style if state else "dim")
    return out.append(("skipped " if state == "skip" else "") + detail, style="dim" if state != "fail" else "red")


class AddNodeScreen(ModalScreen[str | None]):
    """Dismissed with the node's name when it is UP, or None when closed."""

    CSS_PATH = "../views.tcss"
    BINDINGS = [Binding("escape", "close", "Close")]

    class Step(Message):
        def __init__(self, progress: NodeProgress) -> None:
            super().__init__()
            self.progress = progress

    def __init__(self) -> None:
        super().__init__(classes="form-screen")
        self.node: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="add-node"):
            yield Static("[b]Add a node over SSH[/]", classes="view-title")
            with Grid(classes="form"):
                for field, label, hint in FIELDS:
                    yield Label(label)
                    yield Input(placeholder=hint, id=field, compact=True)
            yield Checkbox("accept a new host key (a changed key is always refused)", id="accept", compact=True)
            yield Static("", id="form-error", classes="form-error")
            with Vertical(id="steps"):
                for index, step in enumerate(STEPS):
                    yield Static(step_line(step), id=f"step-{index}", classes="step")
            yield ProgressBar(total=len(STEPS), show_eta=False, id="add-progress")
            with Horizontal(classes="buttons"):
                yield Button("Add", id="add", variant="primary", compact=True)
                yield Button("Close", id="close", compact=True)

    def on_mount(self) -> None:
        self.query_one("#host", Input).focus()

    def values(self) -> dict[str, Any]:
        """The form as NodeAdd fields; raises ValueError with a one-line message."""
        out: dict[str, Any] = {f: self.query_one(f"#{f}", Input).value.strip() or None for f, _, _ in FIELDS}
        if not out["host"]:
            raise ValueError("host: required")
        if out["port"] is not None:
            if not out["port"].isdigit():
                raise ValueError("port: a number from 1 to 65535")
            out["port"] = int(out["port"])
        if out["resources"] is not None:
            try:
                out["resources"] = json.loads(out["resources"])
            except json.JSONDecodeError as exc:
                raise ValueError(f"resources: not JSON ({exc.msg})") from None
        out["accept_new_host_key"] = self.query_one("#accept", Checkbox).value
        return out

    @on(Button.Pressed, "#add")
    @on(Input.Submitted)
    def action_add(self) -> None:
        try:
            values = self.values()
        except ValueError as exc:
            self._error(str(exc))
            return
        self._error("")
        for index, step in enumerate(STEPS):
            self.query_one(f"#step-{index}", Static).update(step_line(step))
        self.query_one(ProgressBar).update(progress=0)
        self.query_one("#add", Button).disabled = True
        self.add(values)

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)

    @work(exclusive=True, group="add-node")
    async def add(self, values: dict[str, Any]) -> None:
        """Ask the daemon to add the node, then follow its steps until the end line."""
        client = self.app.client  # type: ignore[attr-defined]
        try:
            view = await client.add_node(values.pop("host"), **values)
            self.node = view.name
            async for p in client.node_progress(view.name):
                self.post_message(self.Step(p))
        except SageOpsError as exc:
            self.post_message(Failed(exc.message))

    @on(Step)
    def _step(self, message: Step) -> None:
        p = message.progress
        if p.step in STEPS:
            index = STEPS.index(p.step)
            self.query_one(f"#step-{index}", Static).update(step_line(p.step, p.state, p.detail))
            if p.state in ("done", "skip"):
                self.query_one(ProgressBar).update(progress=index + 1)
        elif p.step == "end" and p.state == "done":
            self.query_one(ProgressBar).update(progress=len(STEPS))
            self.dismiss(p.node)
        elif p.step == "end":
            self.post_message(Failed(p.detail or "failed"))

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self._error(message.text)
        self.query_one("#add", Button).disabled = False

    def _error(self, text: str) -> None:
        self.query_one("#form-error", Static).update(Text(text, style="bold red", no_wrap=True, overflow="ellipsis"))

"""The cluster's machines: CPU/memory/GPU bars, state, running jobs and heartbeat of each node,
refreshed every ~2 s; add (a), drain (d) and remove (x) the selected node. The daemon does the
work; this screen asks for it in workers and shows the answer."""

from __future__ import annotations

from typing import Protocol

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import Button, DataTable, Label, Static

from ...cluster import NodeView, PoolView
from ...errors import SageOpsError
from ...render import NODE_STYLE, duration
from ..widgets.bars import UsageBar, usage_text
from ..widgets.footer import KeysFooter
from .add_node import AddNodeScreen

COLUMNS = ("NODE", "STATE", "CPU", "MEMORY", "GPU", "JOBS", "HEARTBEAT", "DETAIL")


class NodeSource(Protocol):
    """Where the node list comes from: the daemon's client, or fixed data for snapshot tests."""

    async def list_nodes(self) -> list[NodeView]: ...

    async def list_pools(self) -> list[PoolView]: ...


class Confirm(ModalScreen[str | None]):
    """A yes/force/no question before an operation that stops work on a machine."""

    BINDINGS = [Binding("y", "choose('yes')", "Yes"), Binding("f", "choose('force')", "Force"),
                Binding("n,escape", "choose('')", "No")]

    def __init__(self, question: str, force_hint: str) -> None:
        super().__init__(classes="confirm")
        self.question = question
        self.force_hint = force_hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question)
            yield Label(f"[dim]force: {self.force_hint}[/]")
            with Horizontal(classes="buttons"):
                yield Button("y: yes", id="yes", variant="primary", compact=True)
                yield Button("f: force", id="force", variant="warning", compact=True)
                yield Button("n: no", id="no", compact=True)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose("" if event.button.id == "no" else str(event.button.id))

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice or None)


def pool_line(p: PoolView) -> str:
    """An elastic pool in one line: `pool gpu: 1 up, 0 joining, 1 idle (min 0, max 3); wants 2, 2 jobs
    waiting; last: add h2: ...` (its nodes are rows of the table)."""
    return (f"pool {p.name}: {p.up} up, {p.joining} joining, {p.idle} idle (min {p.min}, max {p.max}); wants "
            f"{p.desired}, {p.waiting_jobs} job(s) waiting" + (f"; last: {p.last}" if p.last else ""))


def node_row(n: NodeView, bar: int) -> tuple[Text | str, ...]:
    """One table row: the same facts and colours as `sage-ops nodes list`."""
    name = n.name + (" (head)" if n.head else "" if n.managed else " *")  # *: not added by sage-ops
    age = "-" if n.heartbeat_age_s is None else duration(n.heartbeat_age_s) + " ago"
    return (name, Text(n.state, style=NODE_STYLE.get(n.state, "")), usage_text(n.cpu_used, n.cpu_total, bar),
            usage_text(n.memory_used, n.memory_total, bar, gib=True), usage_text(n.gpu_used, n.gpu_total, bar),
            str(n.running_jobs), age, n.detail or "")


class NodesScreen(Screen):
    """Every Ray node and the nodes sage-ops added (also those that are down)."""

    CSS_PATH = "../views.tcss"
    BINDINGS = [Binding("a", "add_node", "Add"), Binding("d", "drain", "Drain"), Binding("x", "remove", "Remove"),
                Binding("r", "reload", "Refresh"), Binding("escape", "back", "Back")]

    class Loaded(Message):
        def __init__(self, nodes: list[NodeView], pools: list[PoolView]) -> None:
            super().__init__()
            self.nodes = nodes
            self.pools = pools

    class Said(Message):
        """A one-line outcome of an operation or an error, for the status line."""

        def __init__(self, text: str, error: bool = False) -> None:
            super().__init__()
            self.text = text
            self.error = error

    def __init__(self, source: NodeSource | None = None, refresh_s: float = 2.0) -> None:
        super().__init__(classes="nodes-screen")
        self._given = source
        self.refresh_s = refresh_s
        self.nodes: list[NodeView] = []
        self._timer: Timer | None = None

    @property
    def source(self) -> NodeSource:
        return self._given or self.app.client  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Static("[b]Nodes[/]", classes="view-title")
        with Horizontal(classes="totals"):
            yield UsageBar("CPU", id="total-cpu")
            yield UsageBar("MEM", gib=True, id="total-memory")
            yield UsageBar("GPU", id="total-gpu")
        yield Static("", id="pools-line")
        yield DataTable(id="nodes", cursor_type="row", zebra_stripes=True)
        yield Static("", id="nodes-status", classes="status-line")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#pools-line", Static).display = False  # shown when the daemon has elastic pools
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.reload()
        self._timer = self.set_interval(self.refresh_s, self.reload)

    def on_screen_suspend(self) -> None:
        """The app keeps this screen when it is left: it stops asking the daemon meanwhile."""
        if self._timer is not None:
            self._timer.pause()

    def on_screen_resume(self) -> None:
        if self._timer is not None:
            self._timer.resume()
            self.reload()

    @work(exclusive=True, group="nodes-refresh")
    async def reload(self) -> None:
        """Fetch the node list (exclusive: a slow daemon never piles up requests)."""
        try:
            self.post_message(self.Loaded(await self.source.list_nodes(), await self.source.list_pools()))
        except SageOpsError as exc:
            self.post_message(self.Said(exc.message, error=True))

    @on(Loaded)
    def _show(self, message: Loaded) -> None:
        table = self.query_one(DataTable)
        keep = self.selected()
        self.nodes = message.nodes
        bar = 10 if self.size.width >= 120 else 5 if self.size.width >= 100 else 3
        table.clear()
        for n in self.nodes:
            table.add_row(*node_row(n, bar), key=n.name)
        names = [n.name for n in self.nodes]
        if keep in names:
            table.move_cursor(row=names.index(keep), animate=False)
        pools = self.query_one("#pools-line", Static)
        pools.display = bool(message.pools)
        pools.update(Text("\n".join(pool_line(p) for p in message.pools), no_wrap=True, overflow="ellipsis"))
        for field, widget_id in (("cpu", "total-cpu"), ("memory", "total-memory"), ("gpu", "total-gpu")):
            used = sum(getattr(n, f"{field}_used") for n in self.nodes)
            total = sum(getattr(n, f"{field}_total") for n in self.nodes)
            self.query_one(f"#{widget_id}", UsageBar).set_usage(used, total)

    @on(Said)
    def _say(self, message: Said) -> None:
        line = self.query_one("#nodes-status", Static)
        line.update(Text(message.text, style="bold red" if message.error else "", no_wrap=True, overflow="ellipsis"))

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not self.nodes or table.row_count == 0:
            return None
        return self.nodes[min(table.cursor_row, len(self.nodes) - 1)].name

    def action_reload(self) -> None:
        self.reload()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_add_node(self) -> None:
        def added(name: str | None) -> None:
            if name:
                self.post_message(self.Said(f"{name}: added, UP"))
            self.reload()

        self.app.push_screen(AddNodeScreen(), added)

    def action_drain(self) -> None:
        self._confirm("drain", "no new jobs there; its running jobs finish, then Ray stops",
                      "do not wait for its running jobs (they fail and retry elsewhere)")

    def action_remove(self) -> None:
        self._confirm("remove", "sage-ops forgets it (drain it first)", "stop Ray there even if it is up")

    def _confirm(self, verb: str, what: str, force_hint: str) -> None:
        name = self.selected()
        if name is None:
            self.post_message(self.Said("no node selected", error=True))
            return

        def answered(choice: str | None) -> None:
            if choice:
                self.operate(verb, name, choice == "force")

        self.app.push_screen(Confirm(f"{verb.capitalize()} node {name}? {what}", force_hint), answered)

    @work(group="nodes-operate")
    async def operate(self, verb: str, name: str, force: bool) -> None:
        client = self.app.client  # type: ignore[attr-defined]
        try:
            if verb == "drain":
                view = await client.drain_node(name, force=force)
                self.post_message(self.Said(f"{name}: {view.state} {view.detail or ''}".rstrip()))
            else:
                await client.remove_node(name, force=force)
                self.post_message(self.Said(f"{name}: removed"))
        except SageOpsError as exc:
            self.post_message(self.Said(f"{verb} {name}: {exc.message}", error=True))
        self.reload()

"""A job's DAG as a tree from its roots, with status colours, the critical path marked and the
progress done/total. It follows the daemon's event stream as the jobs screen does (the app hands
every screen its JobsChanged): a change of one of its jobs, or a new job (it may depend on one of
them), loads the graph again at once; a reload every 2 s keeps a pipeline's operator counts and
running times moving. Drawn like
`sage-ops graph`: a job with several dependencies hangs under the first and names the others.
A pipeline job adds its operators with their records and rates (an OperatorTable); on its own,
without dependencies, its operators are the graph and the tree is hidden."""

from __future__ import annotations

from typing import Protocol

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, Static, Tree
from textual.widgets.tree import TreeNode

from ...errors import SageOpsError
from ...lifecycle import JobStatus
from ...render import STATUS_STYLE, duration
from ...views import GraphNode, GraphView
from ..messages import Failed, JobsChanged, Resync
from ..widgets.operator_table import OperatorTable

CRITICAL = "bold yellow"


class GraphSource(Protocol):
    async def get_job_graph(self, job_id: str) -> GraphView: ...


def node_label(n: GraphNode, root: str) -> Text:
    """`* id name STATUS 12s (also after x) <`: * marks the critical path, < the job asked for."""
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append("* " if n.critical else "  ", style=CRITICAL)
    out.append(f"{n.id} ", style="dim").append(n.name, style=CRITICAL if n.critical else "")
    out.append(" ").append(n.status.value, style=STATUS_STYLE.get(n.status, ""))
    if n.duration:
        out.append(f" {duration(n.duration)}")
    if len(n.dependencies) > 1:
        out.append(f" (also after {', '.join(n.dependencies[1:])})", style="dim")
    if n.id == root:
        out.append(" <", style="bold")
    return out


def job_line(n: GraphNode) -> Text:
    """`pipeline name STATUS 12s`: the status line of a pipeline drawn without its tree."""
    out = Text("pipeline ", style="bold", no_wrap=True, overflow="ellipsis")
    out.append(n.name).append(" ").append(n.status.value, style=STATUS_STYLE.get(n.status, ""))
    if n.duration:
        out.append(f" {duration(n.duration)}")
    return out


def shape(g: GraphView) -> list[tuple[str, str | None]]:
    """(job, parent in the tree) in drawing order: the tree's structure, to know when to rebuild it."""
    ids = {n.id for n in g.nodes}
    parent = {n.id: n.dependencies[0] if n.dependencies and n.dependencies[0] in ids else None for n in g.nodes}
    return [(n.id, parent[n.id]) for n in g.nodes]


class GraphScreen(Screen):
    """The DAG of `job_id` (every job connected to it by dependencies)."""

    CSS_PATH = "../views.tcss"
    AUTO_FOCUS = "#graph-tree"  # not the operator table, which is hidden until a pipeline shows
    BINDINGS = [Binding("r", "reload", "Refresh"), Binding("escape", "back", "Back")]

    class Loaded(Message):
        def __init__(self, graph: GraphView) -> None:
            super().__init__()
            self.graph = graph

    def __init__(self, job_id: str, source: GraphSource | None = None, refresh_s: float = 2.0) -> None:
        super().__init__(classes="graph-screen")
        self.job_id = job_id
        self._given = source
        self.refresh_s = refresh_s
        self.graph: GraphView | None = None
        self._shape: list[tuple[str, str | None]] = []
        self._items: dict[str, TreeNode[str]] = {}
        self._stale = self._loading = False

    @property
    def source(self) -> GraphSource:
        return self._given or self.app.client  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Graph of {self.job_id}[/]", classes="view-title")
        with Horizontal(classes="graph-progress"):
            yield ProgressBar(total=None, show_eta=False, show_percentage=False, id="graph-bar")
            yield Static("", id="graph-counts")
        yield OperatorTable(id="graph-operators")
        tree: Tree[str] = Tree("", id="graph-tree")
        tree.show_root = False
        yield tree
        yield Static("", id="graph-critical", classes="status-line")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(self.refresh_s, self.reload)

    def on_jobs_changed(self, msg: JobsChanged) -> None:
        ids = {n.id for n in self.graph.nodes} if self.graph else {self.job_id}
        if any(c.job_id in ids or c.from_status is None for c in msg.changes):
            self.reload()

    def on_resync(self, _: Resync) -> None:
        self.reload()

    def reload(self) -> None:
        """Load the graph again; asked while a load is on its way, once more after it (a steady
        stream of changes is never a load cut short and begun again, as an exclusive worker's)."""
        self._stale = True
        if not self._loading:
            self._loading = True
            self._load()

    @work(group="graph-refresh")
    async def _load(self) -> None:
        try:
            while self._stale:
                self._stale = False
                try:
                    self.post_message(self.Loaded(await self.source.get_job_graph(self.job_id)))
                except SageOpsError as exc:
                    self.post_message(Failed(exc.message))
        finally:
            self._loading = False

    @on(Loaded)
    def _show(self, message: Loaded) -> None:
        g = self.graph = message.graph
        tree: Tree[str] = self.query_one(Tree)
        by_id = {n.id: n for n in g.nodes}
        alone = g.pipeline is not None and len(g.nodes) == 1
        self.set_class(g.pipeline is not None, "-pipeline")
        self.set_class(alone, "-pipeline-alone")
        if g.pipeline is not None:
            operators = self.query_one(OperatorTable)
            operators.show(g.pipeline)
            if alone and (self.focused is None or self.focused is tree):
                operators.table.focus()
        if shape(g) != self._shape:  # new jobs or edges: draw again; else only relabel (keeps the cursor)
            self._shape = shape(g)
            tree.clear()
            self._items = {}
            parents = {parent for _, parent in self._shape}
            for job_id, parent in self._shape:
                under = self._items.get(parent or "", tree.root)
                label = node_label(by_id[job_id], g.root)
                self._items[job_id] = (under.add(label, data=job_id, expand=True) if job_id in parents
                                       else under.add_leaf(label, data=job_id))
        else:
            for job_id, item in self._items.items():
                item.set_label(node_label(by_id[job_id], g.root))
        self.query_one("#graph-bar", ProgressBar).update(total=max(g.total, 1), progress=g.done)
        counts = [(g.completed, JobStatus.COMPLETED), (g.running, JobStatus.RUNNING), (g.pending, JobStatus.PENDING),
                  (g.failed, JobStatus.FAILED), (g.cancelled, JobStatus.CANCELLED)]
        line = Text(f"{g.done}/{g.total} done", style="bold", no_wrap=True, overflow="ellipsis")
        for i, (n, status) in enumerate(c for c in counts if c[0]):  # zeros say nothing
            line.append(": " if i == 0 else ", ").append(f"{n} {status.value.lower()}", style=STATUS_STYLE[status])
        self.query_one("#graph-counts", Static).update(line)
        if alone:
            self.query_one("#graph-critical", Static).update(job_line(g.nodes[0]))
            return
        path = Text("critical path ", style="bold").append("* ", style=CRITICAL)
        path.append(" -> ".join(by_id[j].name for j in g.critical_path if j in by_id), style=CRITICAL)
        path.append(f"  ({duration(sum(by_id[j].duration for j in g.critical_path if j in by_id))})")
        self.query_one("#graph-critical", Static).update(path)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self.query_one("#graph-critical", Static).update(Text(message.text, style="bold red"))

    def action_reload(self) -> None:
        self.reload()

    def action_back(self) -> None:
        self.app.pop_screen()

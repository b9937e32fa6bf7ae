"""`SageOpsApp`: the TUI's shell. It owns the client, the one worker that follows the daemon's
event stream, and the poller of the header's figures; screens only draw and ask.

Event flow: `follow_events` reads `client.stream_events()`; job changes wait in a buffer for at
most FLUSH seconds (BURST_FLUSH while a burst lasts: each batch redraws every visible row of the
jobs table, so fewer batches leave the UI free for keys and screen switches) and go out as one
JobsChanged, which the app hands to every screen on the stack.
If the UI falls behind, queued JobsChanged merge (`can_replace`), so 1,000 events in a burst cost a
few redraws. When the daemon is away the worker posts Reconnecting, retries with backoff, and
resumes after the last seq it saw (a restart loses nothing); on reconnecting, and on a "resync" line
(this follower fell too far behind), the screens reload what they show.

Start-up: the jobs table loads its first page only once the stream is live (its first line), so
a job that changes while the page is on its way is in the page, in the stream, or in both —
never in neither."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from functools import partial
from typing import Any, ClassVar

from textual import events, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer

from ..client import AsyncJobManagerClient
from ..views import JobChange
from .keys import resolve_first
from .messages import ClusterInfo, JobsChanged, Reconnected, Reconnecting, Resync
from .screens.job_detail import JobDetailScreen
from .screens.jobs import STATUS_KEYS, JobsScreen

FLUSH = 0.1  # seconds a job change may wait to be drawn with the ones after it
BURST = 100  # a batch of at least this many changes: a burst, and the next batch waits longer
BURST_FLUSH = 0.5  # seconds a change may wait during a burst
RETRY = (0.5, 5.0)  # backoff of the event worker: first and longest wait, seconds
POLL = 3.0  # seconds between two refreshes of the header's figures


class SageOpsCommands(Provider):
    """The command palette (ctrl+p): every action of the app and of the screen it was opened on."""

    def commands(self) -> Iterator[tuple[str, Callable[[], Any], str]]:
        app: Any = self.app
        screen = self.screen
        yield from [("Jobs: the jobs table", app.action_jobs, ":jobs"), ("Nodes: the cluster's machines",
                    app.action_nodes, "n"), ("Charts: throughput, queue, utilization", app.action_charts, "t"),
                    ("Submit a job", app.action_submit, "s"), ("Help: every key", app.action_help, "?"),
                    ("Quit", app.exit, "q")]
        if isinstance(screen, (JobsScreen, JobDetailScreen)):
            yield from [("Cancel selected job(s)", screen.action_cancel, "c"),
                        ("Retry selected job(s)", screen.action_retry, "r"),
                        ("Graph of the job's dependencies", screen.action_graph, "g")]
        if isinstance(screen, JobsScreen):
            for key, status in STATUS_KEYS.items():
                yield f"Filter: toggle status {status.value}", partial(screen.action_status, status.value), key
            yield from [("Filter: all statuses", partial(screen.action_status, ""), "0"),
                        ("Filter by name…", screen.action_filter, "/"), ("Sort by the next column",
                        screen.action_sort_next, "o"), ("Select/unselect the job", screen.action_select, "space"),
                        ("Hold selected job(s): keep them from starting", screen.action_hold, "h"),
                        ("Release selected job(s)", screen.action_release, "u"),
                        ("Priority +1", partial(screen.action_priority, 1), "+"),
                        ("Priority -1", partial(screen.action_priority, -1), "-"),
                        ("Reload the jobs", screen.action_reload, "R")]
        if isinstance(screen, JobDetailScreen):
            yield from [("Logs: pause/resume following", screen.action_pause, "p"),
                        ("Logs: search", screen.action_search, "/")]

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, key in self.commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, text=name, help=f"key: {key}")

    async def discover(self) -> Hits:
        for name, callback, key in self.commands():
            yield DiscoveryHit(name, callback, text=name, help=f"key: {key}")


def freeze_heap() -> None:
    """Keep what the app is made of (modules, styles, widgets) out of the collector's full passes.

    A full collection scans every tracked object; during a batch of short jobs they came every
    second or so and took 50-290 ms, the slowest screen switches. Collected first, so no garbage
    is kept for good."""
    gc.collect()
    gc.freeze()


class SageOpsApp(App[None]):
    """`SageOpsApp("unix:///run/sage-ops.sock").run()`; tests may pass `client` and `clock`."""

    CSS_PATH = "app.tcss"
    TITLE = "sage-ops"
    COMMANDS = App.COMMANDS | {SageOpsCommands}
    # the footer shows a few keys (80 columns hold them); help (?) lists every key
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("colon", "command_line", "Cmd"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("n", "nodes", "Nodes", show=False),
        Binding("t", "charts", "Charts", show=False),
        Binding("s", "submit", "Submit", show=False),
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
        Binding("ctrl+p", "command_palette", "Commands", show=False),
    ]
    #: the `:` command line's words (any unique start of one will do: `:no`, `:q`)
    COMMAND_LINE: ClassVar[dict[str, str]] = {
        "jobs": "the jobs table", "nodes": "the cluster's machines", "charts": "throughput, queue, utilization",
        "submit": "submit a job", "help": "every key", "cancel": "cancel the selected job(s)", "quit": "leave"}

    cluster: reactive[ClusterInfo | None] = reactive(None, always_update=True)
    link: reactive[str] = reactive("")  # why the daemon is unreachable ("" while connected)

    def __init__(self, address: str | None = None, token: str | None = None, ca: str | None = None, *,
                 client: Any = None, clock: Callable[[], datetime] | None = None, poll: float = POLL,
                 insecure: bool = False) -> None:
        super().__init__()
        self.client: Any = client or AsyncJobManagerClient(
            address, config={"retry_attempts": 1 if "," not in (address or "") else 3, "ca": ca, "timeout": 15,
                             "insecure": insecure}, token=token)
        self.address = address or ", ".join(str(a) for a in getattr(self.client, "addresses", []))
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.poll = poll
        self.last_seq: int | None = None
        self.live = False  # the event stream has started: views may load (no change can fall between)
        self._changes: list[JobChange] = []
        self._flush: Timer | None = None
        self._bursting = False  # the last batch was a burst's
        self._polling = False

    def now(self) -> datetime:
        return self.clock()

    def get_default_screen(self) -> Screen[Any]:
        return JobsScreen()

    async def on_event(self, event: events.Event) -> None:
        if not await resolve_first(self, event):  # keys in the order typed (keys.py)
            await super().on_event(event)

    def on_mount(self) -> None:
        self.call_after_refresh(freeze_heap)
        self.follow_events()
        self.poll_cluster()
        self.set_interval(self.poll, self.poll_cluster)

    async def on_unmount(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            await close()

    # -- the event stream --------------------------------------------------------------------------
    @work(exclusive=True, group="events")
    async def follow_events(self) -> None:
        delay = RETRY[0]
        while True:
            try:
                async for change in self.client.stream_events(after=self.last_seq):
                    delay = RETRY[0]
                    if self.link:
                        self.post_message(Reconnected())
                    if not self.live:  # the stream's first line: what changes from now on reaches us
                        self.live = True
                        self.post_message(Resync())
                    self.last_seq = change.seq
                    if change.kind == "resync":
                        self._post_changes()
                        self.post_message(Resync())
                    elif change.kind == "job":
                        self._changes.append(change)
                        if self._flush is None:
                            wait = BURST_FLUSH if self._bursting else FLUSH
                            self._flush = self.set_timer(wait, self._post_changes)
                reason = "the daemon closed the event stream"
            except Exception as exc:  # noqa: BLE001 - any failure of the stream: back off and resume
                reason = getattr(exc, "message", None) or f"event stream lost ({exc.__class__.__name__})"
            self._post_changes()
            self.post_message(Reconnecting(reason))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY[1])
            try:
                await self.client.health_check()
            except Exception:  # noqa: BLE001 - still away: the stream call fails fast and we wait again
                continue
            self.post_message(Reconnected())

    def _post_changes(self) -> None:
        self._flush = None
        self._bursting = len(self._changes) >= BURST
        if self._changes:
            self.post_message(JobsChanged(self._changes))
            self._changes = []

    def on_jobs_changed(self, msg: JobsChanged) -> None:
        for screen in self.screen_stack:
            screen.post_message(JobsChanged(list(msg.changes)))

    def on_reconnecting(self, msg: Reconnecting) -> None:
        self.link = msg.reason

    def on_reconnected(self, _: Reconnected) -> None:
        if not self.link:
            return
        self.link = ""
        self.poll_cluster()
        # The stream replays what it missed after last_seq, but a screen may have failed to load
        # meanwhile (or never saw a seq): each reloads what it shows (one request each).
        for screen in self.screen_stack:
            screen.post_message(Resync())

    def on_resync(self, _: Resync) -> None:
        for screen in self.screen_stack:
            screen.post_message(Resync())

    # -- the header's figures ------------------------------------------------------------------------
    @work(group="cluster")
    async def poll_cluster(self) -> None:
        """One poll at a time (a slow daemon is not asked again meanwhile, nor cut short)."""
        if self._polling:
            return
        self._polling = True
        try:
            health, stats = await asyncio.gather(self.client.health_check(), self.client.get_statistics())
        except Exception as exc:  # noqa: BLE001 - keep the last figures; the header says why
            if self.cluster is None:
                self.post_message(ClusterInfo(None, None, getattr(exc, "message", str(exc))))
            return
        finally:
            self._polling = False
        self.post_message(ClusterInfo(health, stats))

    def on_cluster_info(self, msg: ClusterInfo) -> None:
        self.cluster = msg

    # -- navigation ---------------------------------------------------------------------------------
    def _push(self, cls: type[Screen[Any]], *args: Any, callback: Callable[[Any], Any] | None = None,
              keep: bool = False) -> None:
        """Push a screen, never a second copy of the one on top. `keep`: one instance, made once
        and kept mounted when left, so going back to it is a switch, not a new compose and mount
        (under a burst of job events those cost most of a screen switch)."""
        if isinstance(self.screen, cls):
            return
        if not keep:
            self.push_screen(cls(*args), callback)
            return
        name = cls.__name__
        if not self.is_screen_installed(name):
            self.install_screen(cls(*args), name)
        kept = self.get_screen(name)
        if kept in self.screen_stack:  # under other screens: back down to it
            while self.screen is not kept:
                self.pop_screen()
        else:
            self.push_screen(kept, callback)

    def _unavailable(self, exc: ImportError) -> None:
        self.notify(f"not available: {exc}", severity="error")

    def action_jobs(self) -> None:
        while len(self.screen_stack) > 1 and not isinstance(self.screen, JobsScreen):
            self.pop_screen()

    def action_nodes(self) -> None:
        try:
            from .screens.nodes import NodesScreen
        except ImportError as exc:
            return self._unavailable(exc)
        self._push(NodesScreen, keep=True)

    def action_charts(self) -> None:
        try:
            from .screens.charts import ChartsScreen
        except ImportError as exc:
            return self._unavailable(exc)
        self._push(ChartsScreen)

    def action_submit(self) -> None:
        try:
            from .screens.submit import SubmitScreen
        except ImportError as exc:
            return self._unavailable(exc)
        self._push(SubmitScreen, callback=self._submitted)

    def _submitted(self, job_id: str | None) -> None:
        if job_id:
            self.notify(f"submitted {job_id}")

    def action_cursor(self, way: str) -> None:
        """`j`/`k` move like down/up (as in vi and k9s) in whatever has the focus."""
        widget: Any = self.focused
        move = getattr(widget, f"action_cursor_{way}", None) or getattr(widget, f"action_scroll_{way}", None)
        if move is not None:
            move()

    def action_command_line(self) -> None:
        from .screens.command import CommandLine

        self.push_screen(CommandLine(list(self.COMMAND_LINE)), self.run_command_line)

    def run_command_line(self, line: str | None) -> None:
        """`jobs`, `nodes`, `charts`, `submit`, `help`, `cancel` (the selected jobs), `quit`."""
        word = (line or "").strip().lstrip(":").strip().lower()
        if not word:
            return
        found = [c for c in self.COMMAND_LINE if c.startswith(word)]
        if len(found) != 1:
            what = "ambiguous" if found else "unknown command"
            self.notify(f"{what} :{word} — one of " + " ".join(f":{c}" for c in found or self.COMMAND_LINE),
                        severity="error")
            return
        action = found[0]
        if action == "cancel":
            cancel = getattr(self.screen, "action_cancel", None)
            if cancel is None:
                self.notify(":cancel works on the jobs table and a job's detail", severity="warning")
                return
            cancel()
        elif action == "quit":
            self.exit()
        else:
            getattr(self, f"action_{action}")()

    def action_help(self) -> None:
        """Every key active here: the focused widget's, the screen's and the app's."""
        from .screens.help import HelpScreen

        screen = self.screen
        own = {getattr(b, "key", None) for b in type(screen).BINDINGS}  # Textual's generic keys go last
        rows = []
        for active in screen.active_bindings.values():
            b, node = active.binding, active.node
            rank = (0 if b.key in own else 3) if node is screen else 2 if node is self else 1
            where = "app" if node is self else "screen" if node is screen else type(node).__name__
            rows.append((rank, where, self.get_key_display(b), b.description or b.action))
        rows.sort(key=lambda r: r[0])
        rows += [(4, "command line", f":{word}", what) for word, what in self.COMMAND_LINE.items()]
        self.push_screen(HelpScreen(human_name(type(screen).__name__), [r[1:] for r in rows]))


def human_name(cls_name: str) -> str:
    """A screen's class name as a title: `JobDetailScreen` -> `Job detail`."""
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", cls_name.removesuffix("Screen")).lower()
    return words[:1].upper() + words[1:]

"""One job: its spec, attempts, events timeline and result, over a live log pane.

The log follows `stream_job_logs(follow=True)` in a worker that batches lines (~100 ms) into
LogLines messages; a dropped stream resumes by skipping the lines already shown. The log pane's
keys are k9s's where it has them: `w` wrap, `f` full screen, `t` timestamps, ctrl+s save (the
whole log from the daemon, not only the loaded lines); `a` picks the attempt whose lines show.
The details above scroll (`e`); their bottom border says how much is below."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Static

from ...lifecycle import is_terminal
from ...plaintext import after_text, array_bar, array_counts, binary_size, log_line, pending_text
from ...render import duration, headline
from ...views import JobEventView, JobView, LogEntry
from ..messages import JobLoaded, JobsChanged, LogEnded, LogLines, Resync
from ..widgets.header import ClusterHeader
from ..widgets.job_table import resources_cell, status_cell
from ..widgets.log_view import LogView

FLUSH = 0.1  # seconds a log line may wait to be drawn with the ones after it
LOG_KEYS = "w wrap · f full · t time · a attempt · ^s save"  # on the log pane's bottom border
RETRY = (0.5, 5.0)  # backoff while the log stream cannot be resumed: first and longest wait, seconds


def _ts(ts: datetime | None) -> str:
    return "-" if ts is None else ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def overview(job: JobView, now: datetime, plain: bool = False) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    run = None if job.started_at is None else ((job.ended_at or now) - job.started_at).total_seconds()
    rows: list[tuple[str, RenderableType]] = [
        ("job", Text(f"{job.id}  {job.name}")), ("status", status_cell(job.status, plain)),
        ("reason", Text(pending_text(job.pending) if job.pending else job.reason or "-")),
        *([("array", Text(f"{array_bar(job.array)} {array_counts(job.array)}, {job.array.waiting} waiting"
                          f"{f' (at most {job.array.throttle} at once)' if job.array.throttle else ''}"))]
          if job.array else []),
        ("priority", Text(f"{job.priority}   tenant {job.tenant or '-'}   node {job.node or '-'}   exit "
                          f"{'-' if job.exit_code is None else job.exit_code}")),
        ("times", Text(f"created {_ts(job.created_at)}  started {_ts(job.started_at)}  ended {_ts(job.ended_at)}"
                       f"  ran {duration(run)}")),
    ]
    if job.spec is not None:
        s = job.spec
        what = f"{s.script.filename} {' '.join(s.args)}".strip() if s.script else " ".join(s.command)
        rp = s.retry_policy
        rows += [("command", Text(what)),
                 ("resources", Text(resources_cell(job) + (f" {binary_size(s.resources.memory)}"
                                                           if s.resources.memory else ""))),
                 ("retries", Text(f"{rp.max_retries} (delay {rp.retry_delay:g}s x{rp.retry_exponential_base:g})"
                                  if rp.max_retries else "0")),
                 ("after", Text(after_text(s.dependencies, s.after_notok, s.after_any)))]
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def attempts(job: JobView, now: datetime, plain: bool = False) -> RenderableType:
    if not job.attempts:
        return Text("no attempts yet", style="dim")
    table = Table(box=None, pad_edge=False, header_style="bold", title="attempts", title_justify="left")
    for col in ("#", "STATUS", "NODE", "PID", "STARTED", "RAN", "EXIT", "REASON"):
        table.add_column(col, no_wrap=col != "REASON")
    for a in job.attempts:
        ran = ((a.ended_at or now) - a.started_at).total_seconds() if a.started_at else None
        table.add_row(str(a.number), status_cell(a.status, plain), a.node or "-", str(a.pid or "-"), _ts(a.started_at),
                      duration(ran), "-" if a.exit_code is None else str(a.exit_code), headline(a.reason))
    return table


def timeline(events: list[JobEventView], plain: bool = False) -> RenderableType:
    lines = [Text("events", style="bold")]
    for e in events:
        line = Text(f"{_ts(e.time)}  {e.from_status.value if e.from_status else '·'} → ")
        line.append_text(status_cell(e.to_status, plain))
        if e.attempt:
            line.append(f"  attempt {e.attempt}", style="dim")
        if e.reason:
            line.append(f"  {headline(e.reason)}")
        lines.append(line)
    return Group(*lines)


def result_text(job: JobView, result: Any) -> Text:
    if result is None:
        return Text("result: -" if is_terminal(job.status) else "result: (when the job ends)", style="dim")
    body = json.dumps(result, indent=None, default=str)
    return Text(f"result: {body[:2000]}{'…' if len(body) > 2000 else ''}")


class JobDetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("p", "pause", "Pause/follow"),
        Binding("slash", "search", "Search log"),
        Binding("right_square_bracket", "jump(1)", "Next match", show=False),
        Binding("left_square_bracket", "jump(-1)", "Previous match", show=False),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "retry", "Retry", show=False),
        Binding("g", "graph", "Graph", show=False),
        # the log pane's own keys, named on its bottom border (the footer has no room left at 80 columns)
        Binding("w", "wrap", "Log: wrap", show=False),
        Binding("f", "full", "Log: full screen", show=False),
        Binding("t", "timestamps", "Log: timestamps", show=False),  # k9s's key; Charts stay on `:charts` here
        Binding("a", "attempt", "Log: next attempt", show=False),
        Binding("ctrl+s", "save", "Log: save all to ./JOB.log", show=False),
        Binding("e", "details", "Scroll the details (events)", show=False),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.job: JobView | None = None
        self.received = 0  # log entries shown: a resumed stream skips them
        self.log_state = "following"
        self.streaming = False
        self._buffer: list[LogEntry] = []
        self._flush: Timer | None = None
        self.events: list[JobEventView] = []
        self.full = False

    @property
    def client(self) -> Any:
        return self.app.client  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield ClusterHeader(id="header")
        with VerticalScroll(id="info"):
            yield Static(Text(f"loading {self.job_id}…"), id="overview")
            yield Static("", id="attempts")
            yield Static("", id="timeline")
            yield Static("", id="result")
        yield LogView(id="log")
        yield Input(placeholder="search the log; enter jumps, ] and [ move between matches", id="log-search")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#log-search", Input).display = False
        self._title()
        self.load()
        self.follow_logs()
        self.set_focus(self.query_one(LogView))
        info = self.query_one("#info")
        for what in ("scroll_y", "virtual_size"):  # the hint follows scrolling and the content
            self.watch(info, what, self._hint, init=False)

    # -- the record ----------------------------------------------------------------------------------
    @work(exclusive=True, group="detail")
    async def load(self) -> None:
        try:
            job = await self.client.get_job(self.job_id)
            events = await self.client.get_job_events(self.job_id)
            result = await self.client.get_job_result(self.job_id) if is_terminal(job.status) else None
        except Exception as exc:  # noqa: BLE001 - shown in place; the next change or reconnect retries
            self.query_one("#overview", Static).update(Text(f"{self.job_id}: {getattr(exc, 'message', exc)}"))
            return
        self.post_message(JobLoaded(job, events, result))

    @on(JobLoaded)
    def loaded(self, msg: JobLoaded) -> None:
        self.job = msg.job
        now, plain = self.app.now(), self.app.no_color  # type: ignore[attr-defined]
        self.query_one("#overview", Static).update(overview(msg.job, now, plain))
        self.query_one("#attempts", Static).update(attempts(msg.job, now, plain))
        self.query_one("#timeline", Static).update(timeline(msg.events, plain))
        self.query_one("#result", Static).update(result_text(msg.job, msg.result))
        self.events = msg.events
        self.call_after_refresh(self._hint)
        if not self.streaming and not is_terminal(msg.job.status):
            self.follow_logs()  # a retried job writes a new attempt's lines

    def on_jobs_changed(self, msg: JobsChanged) -> None:
        if any(c.job_id == self.job_id for c in msg.changes):
            self.load()

    def on_resync(self, _: Resync) -> None:
        self.load()

    # -- the log -------------------------------------------------------------------------------------
    @work(exclusive=True, group="logs")
    async def follow_logs(self) -> None:
        """Follow until the job has ended; a broken stream is resumed (skipping what is shown)."""
        self.streaming = True
        delay = RETRY[0]
        while True:
            skip, reason = self.received + len(self._buffer), None
            try:
                async for entry in self.client.stream_job_logs(self.job_id, follow=True):
                    delay = RETRY[0]
                    if skip:
                        skip -= 1
                        continue
                    self._buffer.append(entry)
                    if self._flush is None:
                        self._flush = self.set_timer(FLUSH, self._post_lines)
                job = await self.client.get_job(self.job_id)
                if is_terminal(job.status):
                    break
            except Exception as exc:  # noqa: BLE001 - the stream broke: say why, wait, resume
                reason = getattr(exc, "message", None) or f"log stream lost ({exc.__class__.__name__})"
            self._post_lines()
            self.post_message(LogEnded(reason or "waiting"))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY[1])
        self._post_lines()
        self.streaming = False
        self.post_message(LogEnded(None))

    def _post_lines(self) -> None:
        self._flush = None
        if self._buffer:
            self.received += len(self._buffer)
            self.post_message(LogLines(self._buffer))
            self._buffer = []

    @on(LogLines)
    def lines(self, msg: LogLines) -> None:
        self.query_one(LogView).append(msg.entries)
        if self.log_state != "following":
            self.log_state = "following"
            self._title()

    @on(LogEnded)
    def ended(self, msg: LogEnded) -> None:
        self.log_state = msg.reason or "ended"
        self._title()

    def _title(self) -> None:
        log = self.query_one(LogView)
        paused = "" if log.following else " · paused (p follows)"
        found = f" · {len(log.matches)} match(es) for {log.pattern!r}" if log.pattern else ""
        shown = "" if log.attempt is None else f" · attempt {log.attempt} (a: next)"
        flags = "".join(f" · {f}" for f, on in (("wrap", log.wrap), ("no timestamps", not log.timestamps)) if on)
        log.border_title = f"logs · {self.log_state}{paused}{shown}{flags}{found}"
        log.border_subtitle = LOG_KEYS

    def action_pause(self) -> None:
        log = self.query_one(LogView)
        log.follow(not log.following)
        self._title()

    def action_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.display = True
        self.set_focus(box)  # now: the keys typed after `/` go to the box

    def action_wrap(self) -> None:
        log = self.query_one(LogView)
        log.set_wrap(not log.wrap)
        self._title()

    def action_timestamps(self) -> None:
        log = self.query_one(LogView)
        log.set_timestamps(not log.timestamps)
        self._title()

    def action_attempt(self) -> None:
        """Every attempt's lines, then attempt 1, 2, ... of those loaded, then every one again."""
        log = self.query_one(LogView)
        choices: list[int | None] = [None, *log.attempts]
        log.show_attempt(choices[(choices.index(log.attempt) + 1) % len(choices)] if log.attempt in choices
                         else None)
        self._title()
        if log.attempt is None and len(choices) == 1:
            self.notify("no attempt has written a line yet")

    def action_full(self) -> None:
        """The log alone (header and details hidden), or back; escape leaves it too."""
        self.full = not self.full
        self.query_one("#header").display = not self.full
        self.query_one("#info").display = not self.full

    def action_details(self) -> None:
        info = self.query_one("#info", VerticalScroll)
        if self.full:
            self.action_full()
        self.set_focus(info)

    def _hint(self) -> None:
        """The details' bottom border: how many events (or lines) are below what shows."""
        info = self.query_one("#info", VerticalScroll)
        below = int(info.max_scroll_y - info.scroll_y)
        if below <= 0:
            info.border_subtitle = ""
            return
        top = self.query_one("#timeline", Static).virtual_region.y + 1  # the "events" heading's line
        bottom = int(info.scroll_y) + info.scrollable_content_region.height
        hidden = min(len(self.events), max(0, top + len(self.events) - bottom))
        what = f"{hidden} more event{'s' if hidden != 1 else ''}" if hidden else f"{below} more line{'s' * (below > 1)}"
        info.border_subtitle = f"… {what} (e, then ↓ scrolls)"

    def on_resize(self) -> None:
        self.call_after_refresh(self._hint)

    @on(Input.Submitted, "#log-search")
    def search(self, event: Input.Submitted) -> None:
        log = self.query_one(LogView)
        found = log.search(event.value)
        event.input.display = False
        log.focus()
        self._title()
        if event.value and not found:
            self.notify(f"no match for {event.value!r}")

    def action_jump(self, step: int) -> None:
        self.query_one(LogView).jump(step)

    # -- actions ---------------------------------------------------------------------------------------
    def action_back(self) -> None:
        box = self.query_one("#log-search", Input)
        if box.display:
            box.display = False
            self.set_focus(self.query_one(LogView))
        elif self.full:
            self.action_full()
        elif self.focused is self.query_one("#info"):
            self.set_focus(self.query_one(LogView))
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        self.save_log(self.query_one(LogView).attempt)

    @work(group="save")
    async def save_log(self, attempt: int | None) -> None:
        """The whole log (every line the daemon holds, of the attempt shown or all) into a new file
        of the current directory, as `sage-ops logs` prints it; the notification names the file."""
        stem = self.job_id if attempt is None else f"{self.job_id}.attempt{attempt}"
        try:
            path, fd = _new_file(stem)
        except OSError as exc:
            self.notify(f"cannot save the log here: {exc.strerror}", severity="error")
            return
        lines, last, chunk = 0, 1, []
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                async for entry in self.client.stream_job_logs(self.job_id, follow=False):
                    if attempt is not None and entry.attempt != attempt:
                        continue
                    if attempt is None and entry.attempt > 0 and entry.attempt != last:
                        chunk.append(f"── attempt {entry.attempt} ──")
                    last = entry.attempt or last
                    chunk.append(log_line(entry.model_dump()))
                    lines += 1
                    if len(chunk) >= 10_000:  # big logs: written off the UI's loop, a chunk at a time
                        await asyncio.to_thread(out.write, "\n".join(chunk) + "\n")
                        chunk = []
                if chunk:
                    await asyncio.to_thread(out.write, "\n".join(chunk) + "\n")
        except Exception as exc:  # noqa: BLE001 - the daemon went away or the disk is full: say so
            if not lines:
                os.unlink(path)
            self.notify(f"{path}: saving stopped after {lines} lines: {getattr(exc, 'message', exc)}",
                        title="log not saved whole", severity="error")
            return
        self.notify(f"{lines} lines saved to {path}", title="log saved")

    def action_cancel(self) -> None:
        from .confirm import ConfirmScreen

        self.app.push_screen(ConfirmScreen(f"Cancel job {self.job_id}?", yes="Cancel", no="Keep"),
                             lambda yes: self.act("cancel") if yes else None)

    def action_retry(self) -> None:
        self.act("retry")

    def action_graph(self) -> None:
        from .graph import GraphScreen

        self.app.push_screen(GraphScreen(self.job_id))

    @work(group="actions")
    async def act(self, action: str) -> None:
        try:
            await (self.client.cancel_job if action == "cancel" else self.client.retry_job)(self.job_id)
        except Exception as exc:  # noqa: BLE001 - refused or unreachable: tell the user
            self.notify(getattr(exc, "message", str(exc)), title=f"{action} failed", severity="error")
            return
        self.load()
        if action == "retry" and not self.streaming:
            self.follow_logs()


def _new_file(stem: str) -> tuple[str, int]:
    """A file of the current directory that did not exist (JOB.log, else JOB-2.log, ...), made
    private (a log may hold what a job printed of its secrets), never through a planted link."""
    for n in range(1, 1000):
        path = os.path.abspath(f"{stem}.log" if n == 1 else f"{stem}-{n}.log")
        try:
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
    raise FileExistsError(17, f"{stem}.log and 998 others exist")

"""The home screen: the jobs table, paged in as the user scrolls, kept live by the event stream.

Pages come from `list_jobs(cursor=...)`; the table holds a window of at most MAX_PAGES pages
(scrolling on drops pages at the other end), so a queue of 100,000 jobs never sits in the widget.
The daemon filters (status, name: sage_ops/name_filter.py) and sorts (a column, over every job,
not only the rows held: server/storage/job_sort.py); a new filter or order reloads from the first page.
Live jobs land where the current order puts them among the rows held (while the top is held)."""

from __future__ import annotations

import asyncio
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from ...arrays import array_of
from ...lifecycle import JobStatus
from ...name_filter import matches as name_matches
from ...views import JobChange, JobView
from ..messages import JobsChanged, JobsFetched, JobsPage, Resync
from ..widgets.footer import KeysFooter
from ..widgets.header import ClusterHeader
from ..widgets.job_table import SORTABLE, JobTable, PageWindow

PAGE = 200
MAX_PAGES = 10  # rows held: at most PAGE * MAX_PAGES (+ live arrivals until the next reload)
AHEAD = 20  # rows from an end of the window that trigger the next page
FETCH_ONE_BY_ONE = 20  # more new jobs than this in one batch: re-read the first page instead
HOLD = 5000  # changes kept while another screen is on top; more: reload when back
STATUS_KEYS = {"1": JobStatus.RUNNING, "2": JobStatus.PENDING, "3": JobStatus.FAILED, "4": JobStatus.COMPLETED,
               "5": JobStatus.CANCELLED}


def name_glob(text: str) -> str | None:
    """What the user typed after `/`, as `jobs --name` takes it (sage_ops/name_filter.py: text
    matches anywhere, a glob the whole name, in any case)."""
    return text.strip() or None


class JobsScreen(Screen[None]):
    """Filter (daemon-side), sort (loaded rows), select, and act on jobs; enter opens one."""

    BINDINGS = [
        Binding("enter", "open", "Details", show=False),
        Binding("slash", "filter", "Filter"),
        *[Binding(key, f"status('{s.value}')", f"Toggle {s.value}", show=False) for key, s in STATUS_KEYS.items()],
        Binding("0", "status('')", "Every status", show=False),
        Binding("space", "select", "Select", show=False),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "retry", "Retry", show=False),
        Binding("h", "hold", "Hold", show=False),
        Binding("u", "release", "Release", show=False),
        Binding("plus", "priority(1)", "Priority +1", show=False),
        Binding("minus", "priority(-1)", "Priority -1", show=False),
        Binding("g", "graph", "Graph", show=False),
        Binding("a", "tasks", "Array tasks", show=False),
        Binding("o", "sort_next", "Sort"),
        Binding("O", "sort_flip", "Reverse sort", show=False),
        Binding("R", "reload", "Reload", show=False),
        Binding("escape", "clear", "Clear", show=False),
    ]

    def __init__(self, array: str | None = None) -> None:
        """`array`: this array's tasks (`a` on an array opens them), else the jobs, arrays as one row."""
        super().__init__()
        self.array = array
        self.statuses: set[JobStatus] = set()
        self.glob: str | None = None
        self.generation = 0
        self.window = PageWindow()
        self.loading = False
        self._summary = ""
        self._held: list[JobChange] | None = []  # changes that came under another screen (None: too many)
        self._wanted: dict[str, None] = {}  # jobs to fetch, in the order their changes came
        self._fetching = False

    @property
    def client(self) -> Any:
        return self.app.client  # type: ignore[attr-defined]

    @property
    def table(self) -> JobTable:
        return self.query_one("#jobs", JobTable)

    def compose(self) -> ComposeResult:
        yield ClusterHeader(id="header")
        yield Static("", id="jobs-bar")
        yield JobTable(clock=self.app.now, id="jobs")  # type: ignore[attr-defined]
        yield Input(placeholder="name: text or glob (sweep-*); enter applies, escape closes", id="filter")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        # judged once the table has settled (its size lags behind rows added or dropped)
        self.watch(self.table, "scroll_y", lambda _: self.call_after_refresh(self._maybe_page), init=False)
        self.set_interval(5, self._tick)
        if self.app.live:  # type: ignore[attr-defined]  # else the stream's first line brings a Resync
            self.reload()

    # -- loading ---------------------------------------------------------------------------------
    def reload(self) -> None:
        """From the first page again (a new filter, a resync, a reconnect)."""
        self.generation += 1
        self.window, self.loading = PageWindow(), True
        self._wanted.clear()
        self.load_page(0, None, self.generation)

    def order(self) -> dict[str, Any]:
        """The listing's order: the table's sort column, as the daemon's sort key and direction."""
        sort, desc = self.table.daemon_sort()
        return {"sort": sort, "desc": desc} if sort else {}

    @work(group="pages")
    async def load_page(self, index: int, cursor: str | None, generation: int) -> None:
        try:
            page = await self.client.list_jobs(status=[s.value for s in self.statuses], name=self.glob, limit=PAGE,
                                               cursor=cursor, page=True, array=self.array, **self.order())
        except Exception as exc:  # noqa: BLE001 - unreachable, refused: say so, never crash the UI
            self.loading = False
            self.notify(getattr(exc, "message", str(exc)), title="cannot list jobs", severity="error")
            return
        self.post_message(JobsPage(generation, index, page.jobs, page.next_cursor))

    @on(JobsPage)
    def page_arrived(self, msg: JobsPage) -> None:
        window, table = self.window, self.table
        if msg.generation != self.generation:
            return
        self.loading = False
        if not window.pages:
            table.replace(msg.jobs)
            window.add(msg.index, [j.id for j in msg.jobs], msg.next_cursor)
        elif msg.index > max(window.pages):
            window.add(msg.index, table.extend(msg.jobs), msg.next_cursor)
            table.drop(window.excess(MAX_PAGES, bottom=False, keep=table.highlighted_id()))
        elif msg.index > 0 or window.joins(msg.next_cursor):
            window.add(msg.index, table.extend(msg.jobs, front=True), msg.next_cursor)
            table.drop(window.excess(MAX_PAGES, bottom=True, keep=table.highlighted_id()))
        else:
            self.reload()  # the first page again, but it no longer meets the second: start afresh
        self._bar()

    def _maybe_page(self) -> None:
        """The cursor near the end of the window, or the view scrolled to its very end: the next
        page; the same at the top (after pages were dropped there): the page before."""
        if self.loading or not self.window.pages:
            return
        table = self.table
        at_end = 0 < table.max_scroll_y <= table.scroll_y
        below, above = self.window.below(), self.window.above()
        if below and (table.cursor_row >= table.row_count - AHEAD or at_end):
            self.loading = True
            self.load_page(*below, self.generation)
        elif above and (table.cursor_row < AHEAD or table.scroll_y == 0):
            self.loading = True
            self.load_page(*above, self.generation)

    @on(DataTable.RowHighlighted, "#jobs")
    def highlighted(self) -> None:
        self.call_after_refresh(self._maybe_page)  # after the table scrolled the cursor into view

    # -- live changes --------------------------------------------------------------------------------
    def wants(self, change: JobChange) -> bool:
        """Would the daemon list this job under the current filter? (An array's task: no, its
        array is one row.)"""
        if array_of(change.job_id or "") != self.array:
            return False
        if self.statuses and change.to_status not in self.statuses:
            return False
        return self.glob is None or name_matches(change.name or "", self.glob)

    def on_jobs_changed(self, msg: JobsChanged) -> None:
        if not self.is_current:  # under another screen: applied when it is back on top, not meanwhile
            if self._held is not None:
                self._held.extend(msg.changes)
                if len(self._held) > HOLD:
                    self._held = None
            return
        table, gone, missing = self.table, [], {}
        for change in msg.changes:
            if change.kind != "job" or not change.job_id:
                continue
            if (array := array_of(change.job_id)) is not None and array in table.jobs and not self.array:
                missing[array] = True  # its task moved: the array's progress is read again
                continue
            job = table.apply(change)
            if job is not None and self.statuses and job.status not in self.statuses:
                gone.append(job.id)
            elif job is None and 0 in self.window.pages and self.wants(change):
                missing[change.job_id] = True
            elif job is None:
                missing.pop(change.job_id, None)
        table.drop(gone)
        if missing:
            self._wanted.update(missing)
            if not self._fetching:
                self._fetching = True
                self.fetch()
        self._bar()

    def on_screen_resume(self) -> None:
        """Back on top: the changes held meanwhile, at once (a switch back draws the table once)."""
        held, self._held = self._held, []
        if held is None:
            self.reload()
        elif held:
            self.on_jobs_changed(JobsChanged(held))

    def on_resync(self, _: Resync) -> None:
        self.reload()

    @work(group="fetch")
    async def fetch(self) -> None:
        """Jobs the table should now show: one by one when few, else the first page again. One
        request at a time: jobs wanted meanwhile go together in the next (a burst of 1,000 new
        jobs is a few reads, not one per 100 ms batch)."""
        try:
            while self._wanted:
                ids, generation = list(self._wanted), self.generation
                self._wanted.clear()
                if len(ids) > FETCH_ONE_BY_ONE:
                    try:
                        page = await self.client.list_jobs(status=[s.value for s in self.statuses], name=self.glob,
                                                           limit=PAGE, page=True, array=self.array, **self.order())
                    except Exception:  # noqa: BLE001 - the next change or reload brings them
                        continue
                    wanted = set(ids)
                    jobs = [j for j in reversed(page.jobs) if j.id in wanted]  # oldest first, as events come
                else:
                    got = await asyncio.gather(*(self.client.get_job(i) for i in ids), return_exceptions=True)
                    jobs = [j for j in got if isinstance(j, JobView)]
                self.post_message(JobsFetched(generation, jobs))
        finally:
            self._fetching = False

    @on(JobsFetched)
    def fetched(self, msg: JobsFetched) -> None:
        if msg.generation != self.generation:
            return
        table = self.table
        fresh = [j for j in msg.jobs if j.id not in table.jobs]
        for job in msg.jobs:
            table.update_job(job)
        if self.statuses:
            fresh = [j for j in fresh if j.status in self.statuses]
        if 0 in self.window.pages:
            below = self.window.below() is not None  # a job after the last row held comes with its page

            def fits(at: int, rows: int) -> bool:
                return at < rows or not below

            self.window.place(table.insert(fresh, fits), table.order)
        if table.row_count > PAGE * (MAX_PAGES + 1):
            self.reload()
        self._bar()

    def _tick(self) -> None:
        table = self.table
        first = max(0, int(table.scroll_y))
        table.tick([str(row.key.value) for row in table.ordered_rows[first:first + table.size.height]])

    def _bar(self) -> None:
        """The summary line: redrawn only when it changes, and never a new layout (its size is
        fixed), which during a burst would reflow and repaint the whole screen every 100 ms."""
        text = (f"tasks of array {self.array} (escape: back) │ " if self.array else "") + self.table.summary(
            self.statuses, self.glob, self.window)
        if text != self._summary:
            self._summary = text
            self.query_one("#jobs-bar", Static).update(text, layout=False)

    # -- actions ---------------------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#jobs")
    def row_selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        job_id = self.table.highlighted_id()
        if job_id:
            from .job_detail import JobDetailScreen

            self.app.push_screen(JobDetailScreen(job_id))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        self.set_focus(box)  # now, not later: the keys typed right after `/` are the filter's

    @on(Input.Submitted, "#filter")
    def filter_submitted(self, event: Input.Submitted) -> None:
        self.glob = name_glob(event.value)
        event.input.display = False
        self.table.focus()
        self.reload()

    def action_status(self, value: str) -> None:
        """Toggle one status in the filter ("": every status)."""
        self.statuses = self.statuses ^ {JobStatus(value)} if value else set()
        self.reload()

    def action_reload(self) -> None:
        self.reload()

    def action_select(self) -> None:
        self.table.toggle_selected()
        self._bar()

    def action_clear(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.display = False
            self.table.focus()
        elif self.table.selected:
            self.table.clear_selection()
            self._bar()
        elif self.statuses or self.glob:
            self.statuses, self.glob = set(), None
            box.value = ""
            self.reload()
        elif self.array:  # an array's tasks: back to the jobs
            self.app.pop_screen()

    def sort(self, column: str | None, reverse: bool) -> None:
        """A new order: the daemon sorts every job, and the table reloads from its first page."""
        if not self.table.sort_on(column, reverse):
            self.notify(f"cannot sort by {column}: one of {', '.join(SORTABLE)}", severity="warning")
            return
        self.reload()
        self._bar()

    def action_sort_next(self) -> None:
        order: list[str | None] = [None, *SORTABLE]
        self.sort(order[(order.index(self.table.sort_column) + 1) % len(order)], self.table.sort_reverse)

    def action_sort_flip(self) -> None:
        self.sort(self.table.sort_column, not self.table.sort_reverse)

    @on(DataTable.HeaderSelected, "#jobs")
    def header_clicked(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        self.sort(column, column == self.table.sort_column and not self.table.sort_reverse)

    def action_cancel(self) -> None:
        ids = self.table.targets()
        if not ids:
            return
        from .confirm import ConfirmScreen

        what = f"job {ids[0]} ({self.table.jobs[ids[0]].name})" if len(ids) == 1 else f"{len(ids)} selected jobs"
        self.app.push_screen(ConfirmScreen(f"Cancel {what}?", yes="Cancel", no="Keep"),
                             lambda yes: self.act("cancel", ids) if yes else None)

    def action_retry(self) -> None:
        self.act("retry", self.table.targets())

    def action_hold(self) -> None:
        self.act("hold", self.table.targets())

    def action_release(self) -> None:
        self.act("release", self.table.targets())

    def action_priority(self, delta: int) -> None:
        self.act("priority", self.table.targets(), delta)

    def action_tasks(self) -> None:
        """An array's tasks, on a screen of their own (escape goes back)."""
        job = self.table.jobs.get(self.table.highlighted_id() or "")
        if job is None or job.array is None:
            self.notify("a opens an array's tasks: this is not an array", severity="warning")
            return
        self.app.push_screen(JobsScreen(array=job.id))

    def action_graph(self) -> None:
        job_id = self.table.highlighted_id()
        if job_id:
            from .graph import GraphScreen

            self.app.push_screen(GraphScreen(job_id))

    @work(group="actions")
    async def act(self, action: str, ids: list[str], delta: int = 0) -> None:
        """Cancel, retry, hold, release or re-prioritize: the answers redraw their rows at once (events
        follow)."""
        if not ids:
            return
        try:
            if action == "priority":
                views = [await self.client.set_priority(i, self.table.jobs[i].priority + delta) for i in ids]
            elif action in ("hold", "release"):
                bulk = await getattr(self.client, f"{action}_jobs")(ids)
                if bulk.errors:
                    self.notify("".join(f"{e.get('message')}\n" for e in bulk.errors[:3]).strip(),
                                title=f"{action}: {len(bulk.affected)} job(s)", severity="warning")
                views = [await self.client.get_job(i) for i in ids if i not in {e.get("id") for e in bulk.errors}]
            elif len(ids) == 1:
                views = [await (self.client.cancel_job if action == "cancel" else self.client.retry_job)(ids[0])]
            else:
                bulk = await (self.client.cancel_jobs if action == "cancel" else self.client.retry_jobs)(ids)
                self.notify(f"{action}: {len(bulk.affected)} job(s)" + "".join(
                    f"\n{e.get('message')}" for e in bulk.errors[:3]))
                views = []
        except Exception as exc:  # noqa: BLE001 - refused or unreachable: tell the user, keep the UI
            self.notify(getattr(exc, "message", str(exc)), title=f"{action} failed", severity="error")
            return
        for table in self.query("#jobs").results(JobTable):  # none if the app closed while it waited
            table.clear_selection()
        self.post_message(JobsFetched(self.generation, views))

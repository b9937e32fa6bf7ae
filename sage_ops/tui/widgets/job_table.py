"""The jobs table: one row per loaded job, in the daemon's order (newest first, or sorted by a
column over every job: the daemon sorts, see server/storage/job_sort.py), updated in place as events arrive.

It holds only the rows the jobs screen has paged in (a PageWindow of pages, never the whole
queue), and keeps the JobView of each row so changes, placing a new job and ages need no request."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from datetime import datetime
from itertools import count
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.widgets import DataTable
from textual.widgets.data_table import CellType, ColumnKey, RowKey

from ...lifecycle import JobStatus, is_terminal
from ...plaintext import binary_size, reason_cell
from ...render import STATUS_STYLE, duration
from ...views import JobChange, JobView
from .columns import fit

#: the CLI's colours (render.STATUS_STYLE) plus a symbol, so a status reads without colour too
STATUS_SYMBOL: dict[JobStatus, str] = {
    JobStatus.SUBMITTED: "○", JobStatus.PENDING: "◷", JobStatus.RUNNING: "▶", JobStatus.COMPLETED: "✔",
    JobStatus.FAILED: "✘", JobStatus.CANCELLED: "⊘", JobStatus.REJECTED: "⊗",
}
#: (key, label, width); the first column marks the multi-selection
COLUMNS: list[tuple[str, str, int]] = [
    ("sel", " ", 1), ("id", "ID", 12), ("name", "NAME", 18), ("status", "STATUS", 11), ("priority", "PRI", 4),
    ("tenant", "TENANT", 8), ("res", "RES", 11), ("node", "NODE", 10), ("attempts", "ATT", 3), ("exit", "EXIT", 4),
    ("age", "AGE", 6), ("duration", "DUR", 6), ("reason", "REASON", 20),
]
#: column -> (the daemon's sort key, whether the column's ascending order is the daemon's descending
#: one) and the value the row holds for it (None: missing, sorts lowest, as on the daemon)
DAEMON_SORT: dict[str, tuple[str, bool, Callable[[JobView], Any]]] = {
    "id": ("id", False, lambda j: j.id), "name": ("name", False, lambda j: j.name),
    "status": ("status", False, lambda j: j.status.value), "priority": ("priority", False, lambda j: j.priority),
    "tenant": ("tenant", False, lambda j: j.tenant), "node": ("node", False, lambda j: j.node),
    "attempts": ("attempts", False, lambda j: j.attempts_made), "exit": ("exit_code", False, lambda j: j.exit_code),
    "age": ("created", True, lambda j: j.created_at.timestamp()), "reason": ("reason", False, lambda j: j.reason),
}
SORTABLE = [key for key, _, _ in COLUMNS if key in DAEMON_SORT]
#: what a narrow terminal hides first (the rest of a job is one `enter` away, in its detail)
HIDE_FIRST = ["reason", "tenant", "res", "attempts", "exit", "priority", "node", "duration"]


def columns_for(width: int) -> list[tuple[str, str, int]]:
    """The columns that fit `width` cells without scrolling sideways (80 columns keep id, name,
    status, node and the times)."""
    return fit(COLUMNS, HIDE_FIRST, width)


def tint(style: str, plain: bool = False) -> Style:
    """A style of render.py's; under NO_COLOR (`plain`) only its bold/dim/italic, since Textual's
    monochrome filter would turn a dark red into a grey hardly visible on a dark background."""
    parsed = Style.parse(style)
    return parsed.without_color if plain else parsed


def status_cell(status: JobStatus, plain: bool = False) -> Text:
    return Text(f"{STATUS_SYMBOL.get(status, '?')} {status.value}", style=tint(STATUS_STYLE.get(status, ""), plain))


def resources_cell(job: JobView) -> str:
    """CPUs and GPUs asked for: `2c 1g`."""
    if job.spec is None:
        return "-"
    res = job.spec.resources
    return f"{res.cpu:g}c" + (f" {res.gpu:g}g" if res.gpu else "")


def resources_with_memory(job: JobView) -> str:
    """The table's RES cell: CPUs, GPUs and memory asked for (`2c 1g 8G`, binary units as `status`)."""
    memory = job.spec.resources.memory if job.spec else None
    return resources_cell(job) + (f" {binary_size(memory).removesuffix('iB')}" if memory else "")


def sort_value(job: JobView, column: str | None) -> tuple[Any, ...]:
    """Where a job sorts under `column` (None: the daemon's default, by creation): missing values
    lowest and the id breaking ties, as the daemon does."""
    if column is None:
        return (job.created_at.timestamp(),)
    value = DAEMON_SORT[column][2](job)
    return (value is not None, 0 if value is None else value, job.id)


def with_change(job: JobView, change: JobChange) -> JobView:
    """The job as a change of state leaves it: status, times, and the fields the stream carries."""
    status = change.to_status or job.status
    update: dict[str, Any] = {"status": status, "reason": change.reason, "pending": None,
                              "attempts_made": max(job.attempts_made, change.attempt)}
    update.update({k: v for k in ("priority", "node", "exit_code") if (v := getattr(change, k)) is not None})
    if status is JobStatus.RUNNING:
        update.update(started_at=change.time or job.started_at, ended_at=None)
    elif is_terminal(status):
        update["ended_at"] = change.time or job.ended_at
    elif status is JobStatus.PENDING:
        update["ended_at"] = None
    return job.model_copy(update=update)


def literal(value: Any) -> Any:
    """A str as Text shown as written (no markup); other renderables as they are."""
    return Text(value, no_wrap=True, end="") if isinstance(value, str) else value


class CellCachedTable(DataTable[Any]):
    """A DataTable that redraws only the cells that changed.

    DataTable keys its drawn-cell cache on a table-wide update count, so one `update_cell` (a live
    change, an age moving) made the next paint draw every visible cell anew: 400 cells at ~0.3 ms,
    the tail of a screen switch during a batch. Here a cell's drawing is keyed on when that cell
    (or its row) was last set instead; everything else DataTable keys on is kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._set_at: dict[Any, int] = {}  # (row key, column key) or row key -> when last set
        self._clock = count(1)
        self._drawn: LRUCache[tuple[Any, ...], list[list[Segment]]] = LRUCache(10_000)
        super().__init__(*args, **kwargs)  # last: DataTable's watchers clear the caches above

    def add_row(self, *cells: CellType, height: int | None = 1, key: str | None = None,
                label: Any = None) -> RowKey:
        row_key = super().add_row(*cells, height=height, key=key, label=label)
        self._set_at[row_key] = next(self._clock)  # a key used again is a new row
        return row_key

    def update_cell(self, row_key: RowKey | str, column_key: ColumnKey | str, value: CellType, *,
                    update_width: bool = False) -> None:
        super().update_cell(row_key, column_key, value, update_width=update_width)
        self._set_at[(row_key, column_key)] = next(self._clock)

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._drawn.clear()

    def notify_style_update(self) -> None:
        self._drawn.clear()
        super().notify_style_update()

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> list[list[Segment]]:
        if row_index < 0 or column_index < 0:  # the header and row labels: as DataTable does
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        key = (row_key, column_key, row_index, base_style, width, cursor, hover, self._show_hover_cursor,
               self._pseudo_class_state, self._set_at.get(row_key), self._set_at.get((row_key, column_key)))
        lines = self._drawn.get(key)
        if lines is None:
            lines = self._drawn[key] = super()._render_cell(row_index, column_index, base_style, width,
                                                            cursor, hover)
        return lines


class JobTable(CellCachedTable):
    """A DataTable keyed by job id; `order` is the daemon's order (newest first)."""

    def __init__(self, clock: Callable[[], datetime], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.clock = clock
        self.jobs: dict[str, JobView] = {}
        self.order: list[str] = []
        self.selected: set[str] = set()
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.shown: list[str] = []  # the keys of the columns on screen

    def on_mount(self) -> None:
        self._fit(self.app.size.width)

    def on_resize(self) -> None:
        self._fit(self.size.width)

    def _fit(self, width: int) -> None:
        """Columns that fit the width: rebuilt (from the held views) only when the set changes."""
        shown = columns_for(width)
        if [key for key, _, _ in shown] == self.shown:
            return
        keep = self.highlighted_id()
        self.clear(columns=True)
        self.shown = [key for key, _, _ in shown]
        for key, label, width in shown:
            self.add_column(label, width=width, key=key)
        for job_id in self.order:
            self.add_row(*self.row(self.jobs[job_id]), key=job_id)
        self._arrange(keep)

    # -- rows -------------------------------------------------------------------------------
    def cells(self, job: JobView) -> dict[str, Any]:
        """Each cell as Text: a reason quotes users' words (a command that could not start), never
        Rich markup (`[/x]` made DataTable's markup parser raise while drawing; `[red]…` restyled
        the row), and a Text is drawn without parsing."""
        now = self.clock()
        run = None if job.started_at is None else ((job.ended_at or now) - job.started_at).total_seconds()
        return {k: literal(v) for k, v in self._cells(job, now, run).items()}

    def _cells(self, job: JobView, now: datetime, run: float | None) -> dict[str, Any]:
        return {"sel": "*" if job.id in self.selected else " ", "id": job.id, "name": job.name,
                "status": status_cell(job.status, self.app.no_color), "priority": str(job.priority),
                "tenant": job.tenant or "-", "res": resources_with_memory(job), "node": job.node or "-",
                "attempts": str(job.attempts_made), "age": duration((now - job.created_at).total_seconds()),
                "duration": duration(run), "exit": "-" if job.exit_code is None else str(job.exit_code),
                "reason": reason_cell(job)}

    def row(self, job: JobView) -> list[Any]:
        cells = self.cells(job)
        return [cells[key] for key in self.shown]

    def replace(self, jobs: Iterable[JobView]) -> None:
        """All rows anew (a new filter, a reload); the cursor stays on the same job if it can."""
        keep = self.highlighted_id()
        self.clear()
        self.jobs, self.order = {}, []
        self.extend(jobs)
        self.selected &= set(self.jobs)
        self._keep(keep)

    def extend(self, jobs: Iterable[JobView], front: bool = False) -> list[str]:
        """Add jobs not shown yet, after the last row (or before the first); returns their ids."""
        keep = self.highlighted_id()
        added = [j for j in jobs if j.id not in self.jobs]
        for job in added:
            self.jobs[job.id] = job
            self.add_row(*self.row(job), key=job.id)
        ids = [j.id for j in added]
        self.order = ids + self.order if front else self.order + ids
        if front:
            self._arrange(keep)
        return ids

    def descending(self) -> bool:
        """Whether the rows run from the highest sort value down (the default order: newest first)."""
        if self.sort_column is None:
            return True
        return self.sort_reverse != DAEMON_SORT[self.sort_column][1]

    def insert(self, jobs: Iterable[JobView], fits: Callable[[int, int], bool] = lambda _, __: True) -> list[str]:
        """Add jobs, given oldest first, where the current order puts them (those `fits(position,
        rows)` accepts); returns their ids. A new job lands before the jobs created in the same
        instant, so a batch shows newest first, as the daemon lists it."""
        keep = self.highlighted_id()
        added: list[str] = []
        down = self.descending()
        keys = [sort_value(self.jobs[i], self.sort_column) for i in self.order]
        if down:
            keys.reverse()  # ascending, to bisect; a position p in it is len - p in the rows
        for job in sorted((j for j in jobs if j.id not in self.jobs), key=lambda j: j.created_at):
            key = sort_value(job, self.sort_column)
            found = bisect_right(keys, key)
            at = len(keys) - found if down else found
            if not fits(at, len(self.order)):
                continue
            keys.insert(found, key)
            self.order.insert(at, job.id)
            self.jobs[job.id] = job
            self.add_row(*self.row(job), key=job.id)
            added.append(job.id)
        if added:
            self._arrange(keep)
        return added

    def drop(self, ids: Iterable[str]) -> None:
        gone = {i for i in ids if i in self.jobs}
        if not gone:
            return
        keep = self.highlighted_id()
        for job_id in gone:
            self.remove_row(job_id)
            del self.jobs[job_id]
        self.selected -= gone
        self.order = [i for i in self.order if i not in gone]
        self._keep(keep)

    def update_job(self, job: JobView) -> None:
        """Redraw a known job's row from a fresher view (in place: the row keeps its place)."""
        old = self.jobs.get(job.id)
        if old is None:
            return
        self.jobs[job.id] = job
        # only the cells that changed: each update makes the table draw every visible row anew
        for key, before, value in zip(self.shown, self.row(old), self.row(job)):
            if value != before:
                self.update_cell(job.id, key, value)

    def apply(self, change: JobChange) -> JobView | None:
        """Apply a change of state to its row if shown; returns the updated view."""
        job = self.jobs.get(change.job_id or "")
        if job is None or change.to_status is None:
            return None
        job = with_change(job, change)
        self.update_job(job)
        return job

    def tick(self, ids: Iterable[str] | None = None) -> None:
        """Age and duration move with the clock: redraw those two cells (of the rows in view)."""
        moving = [key for key in ("age", "duration") if key in self.shown]
        for job_id in self.jobs if ids is None else ids:
            cells = self.cells(self.jobs[job_id])
            for key in moving:
                if cells[key] != self.get_cell(job_id, key):  # an unchanged cell is not drawn again
                    self.update_cell(job_id, key, cells[key])

    def summary(self, statuses: set[JobStatus], glob: str | None, window: PageWindow) -> str:
        """The line above the table: filter, sort, rows held (and whether there are more), selection."""
        parts = [("status " + " ".join(f"{STATUS_SYMBOL[s]} {s.value}" for s in sorted(statuses))
                  if statuses else "all statuses")]
        if glob:
            parts.append(f"name {glob}")
        if self.sort_column:
            parts.append(f"sort {self.sort_column} {'↓' if self.sort_reverse else '↑'}")
        parts.append(f"{self.row_count} rows" + (" (more below)" if window.below() else "")
                     + (" (more above)" if window.above() else ""))
        if self.selected:
            parts.append(f"{len(self.selected)} selected")
        return " │ ".join(parts)

    # -- cursor, selection, order ---------------------------------------------------------------
    def highlighted_id(self) -> str | None:
        if not self.row_count or not self.is_valid_row_index(self.cursor_row):
            return None
        return str(self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value)

    def targets(self) -> list[str]:
        """What an action applies to: the multi-selection, else the highlighted job."""
        if self.selected:
            return [i for i in self.order if i in self.selected]
        job_id = self.highlighted_id()
        return [job_id] if job_id else []

    def toggle_selected(self) -> None:
        job_id = self.highlighted_id()
        if job_id is None:
            return
        self.selected ^= {job_id}
        self.update_cell(job_id, "sel", "*" if job_id in self.selected else " ")

    def clear_selection(self) -> None:
        for job_id in self.selected & set(self.jobs):
            self.update_cell(job_id, "sel", " ")
        self.selected.clear()

    def sort_on(self, column: str | None, reverse: bool = False) -> bool:
        """Order by a column from now on (None: newest first); the screen asks the daemon for the
        rows in that order. False for a column the daemon cannot sort by."""
        if column is not None and column not in DAEMON_SORT:
            return False
        self.sort_column, self.sort_reverse = column, reverse if column else False
        return True

    def daemon_sort(self) -> tuple[str | None, bool]:
        """The listing's `sort` and `desc` for the current order."""
        if self.sort_column is None:
            return None, False
        key, flipped, _ = DAEMON_SORT[self.sort_column]
        return key, self.sort_reverse != flipped

    def _arrange(self, keep: str | None) -> None:
        """Rows in `order`; the cursor stays on the job it was on."""
        rank = {job_id: n for n, job_id in enumerate(self.order)}
        self.sort("id", key=lambda cell: rank[str(cell)])
        self._keep(keep)

    def _keep(self, job_id: str | None) -> None:
        """The cursor stays on its job, and in view, when rows come or go around it."""
        if job_id in self.jobs and self.get_row_index(job_id) != self.cursor_row:
            self.move_cursor(row=self.get_row_index(job_id), animate=False)


class PageWindow:
    """Which pages of the daemon's listing the table holds, and the cursor where each next one starts."""

    def __init__(self) -> None:
        self.pages: dict[int, list[str]] = {}  # page index -> the ids it brought
        self.cursors: dict[int, str | None] = {}  # page index -> cursor of the page after it (None: the end)

    def add(self, index: int, ids: list[str], next_cursor: str | None) -> None:
        self.pages[index] = ids
        self.cursors[index] = next_cursor

    def below(self) -> tuple[int, str] | None:
        """The page after the window (index, cursor), if the listing goes on."""
        hi = max(self.pages, default=None)
        cursor = None if hi is None else self.cursors.get(hi)
        return None if hi is None or cursor is None else (hi + 1, cursor)

    def above(self) -> tuple[int, str | None] | None:
        """The page before the window, if pages were dropped there."""
        lo = min(self.pages, default=0)
        return None if lo == 0 else (lo - 1, self.cursors[lo - 2] if lo > 1 else None)

    def joins(self, first_page_cursor: str | None) -> bool:
        """Does a fresh first page reach down to where the second one starts? (Cursors are the
        daemon's submission seqs; more new jobs than a page would leave a gap.)"""
        old = self.cursors.get(0)
        try:
            return first_page_cursor is None or (old is not None and int(first_page_cursor) <= int(old))
        except ValueError:
            return False

    def place(self, ids: list[str], order: list[str]) -> None:
        """Jobs that arrived live join the page of the row above them (the first page at the top)."""
        if not ids:
            return
        page_of = {job_id: n for n, held in self.pages.items() for job_id in held}
        for job_id in ids:
            at = order.index(job_id)
            above = next((page_of[i] for i in reversed(order[:at]) if i in page_of), min(self.pages))
            self.pages[above].append(job_id)
            page_of[job_id] = above

    def excess(self, limit: int, bottom: bool, keep: str | None) -> list[str]:
        """Over `limit` pages: drop the one at the bottom (or top) end, unless it holds `keep`."""
        if len(self.pages) <= limit:
            return []
        end = max(self.pages) if bottom else min(self.pages)
        return [] if keep in self.pages[end] else self.pages.pop(end)

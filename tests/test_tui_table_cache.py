"""The jobs table redraws only the cells that changed (issue 22: DataTable drew every visible cell
after any update, the tail of a screen switch during a batch) and never shows a stale cell: a
change, a row dropped and added again, rows moving. The real widget in a real Textual app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from sage_ops.lifecycle import JobStatus
from sage_ops.tui.widgets.job_table import JobTable
from sage_ops.views import JobView

T0 = datetime(2026, 1, 2, 12, 0, 0, tzinfo=timezone.utc)
S = JobStatus


def job(n: int, status: JobStatus = S.PENDING, name: str | None = None) -> JobView:
    return JobView(id=f"{n:02d}beef{n:06d}", name=name or f"job-{n}", status=status,
                   created_at=T0 + timedelta(seconds=n))


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield JobTable(clock=lambda: T0 + timedelta(minutes=5), id="jobs")


def counting(table: JobTable, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count DataTable's own cell drawing from now on (the cells not served from a cache)."""
    calls: list[int] = []
    real = DataTable._render_cell

    def draw(self: Any, row_index: int, *args: Any, **kwargs: Any) -> Any:
        if self is table and row_index >= 0:  # data cells, not the header
            calls.append(row_index)
        return real(self, row_index, *args, **kwargs)

    monkeypatch.setattr(DataTable, "_render_cell", draw)
    return calls


def lines(table: JobTable) -> list[str]:
    """What the table shows, one string per row (the header left out)."""
    return [table.render_line(y).text for y in range(1, table.row_count + 1)]


@asynccontextmanager
async def drawn(rows: int) -> AsyncIterator[JobTable]:
    """A table of `rows` jobs (newest first), drawn once: its caches hold every cell."""
    async with TableApp().run_test(size=(160, 20)) as pilot:
        table = pilot.app.query_one(JobTable)
        table.extend([job(n) for n in range(rows, 0, -1)])
        await pilot.pause()
        lines(table)
        yield table


async def test_one_changed_cell_is_the_only_cell_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    async with drawn(8) as table:
        calls = counting(table, monkeypatch)
        table.update_job(job(5, name="renamed"))
        lines(table)
        assert len(calls) == 1


async def test_a_changed_cell_shows_its_new_value() -> None:
    async with drawn(3) as table:
        table.update_job(job(2, S.CANCELLED))
        assert "CANCELLED" in lines(table)[1]


async def test_a_row_added_again_under_the_same_id_shows_its_new_content() -> None:
    async with drawn(3) as table:
        table.drop([job(2).id])
        lines(table)
        table.insert([job(2, name="back-again")])
        assert "back-again" in lines(table)[1]


async def test_rows_that_move_show_their_own_cells() -> None:
    async with drawn(3) as table:
        table.insert([job(9, name="newest")])  # lands on top: every row moves down one line
        assert [line.split()[1] for line in lines(table)] == ["newest", "job-3", "job-2", "job-1"]


async def test_a_clock_tick_that_changes_no_age_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    async with drawn(8) as table:
        calls = counting(table, monkeypatch)
        table.tick()
        lines(table)
        assert calls == []

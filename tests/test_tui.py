"""The TUI (`sage-ops tui`) driven by Textual's Pilot against a real daemon and real jobs; plus
snapshot tests of the jobs and job detail screens fed fixed data (a fake client, only there, so
the pictures are deterministic: fixed ids, times and a frozen clock)."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import Daemon, until

from sage_ops.lifecycle import JobStatus
from sage_ops.schemas import JobSpec, Resources
from sage_ops.telemetry import Health, RayHealth, Stats
from sage_ops.tui.app import SageOpsApp
from sage_ops.tui.messages import JobsChanged
from sage_ops.tui.screens import jobs as jobs_screen
from sage_ops.tui.screens.confirm import ConfirmScreen
from sage_ops.tui.screens.help import HelpScreen
from sage_ops.tui.screens.job_detail import JobDetailScreen
from sage_ops.tui.screens.jobs import JobsScreen
from sage_ops.tui.widgets.job_table import JobTable, with_change
from sage_ops.tui.widgets.log_view import LogView
from sage_ops.views import AttemptView, JobChange, JobEventView, JobList, JobView, LogEntry

S = JobStatus


def table(app: SageOpsApp) -> JobTable:
    return app.screen_stack[0].query_one("#jobs", JobTable)  # the jobs screen is the home screen


async def highlight(pilot: Any, app: SageOpsApp, job_id: str) -> JobTable:
    t = await until(pilot, lambda: job_id in table(app).jobs and table(app))
    t.move_cursor(row=t.get_row_index(job_id))
    await pilot.pause()
    assert t.highlighted_id() == job_id
    return t


def app_for(daemon: Daemon) -> SageOpsApp:
    return SageOpsApp(f"unix://{daemon.socket}")


def submit(daemon: Daemon, argv: list[str], name: str) -> str:
    return daemon.client(timeout=60).submit_command(argv, name=name)


# -- behaviour, real daemon -----------------------------------------------------------------------
async def test_logs_arrive_live_in_the_detail_screen(daemon: Daemon) -> None:
    code = "import time\nfor i in range(12):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.4)"
    job_id = await asyncio.to_thread(submit, daemon, [sys.executable, "-c", code], f"ticker-{uuid.uuid4().hex[:6]}")
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        t = await until(pilot, lambda: job_id in table(app).jobs and table(app))
        row = t.get_row_index(job_id) + 1  # below the header row
        await pilot.click("#jobs", offset=(20, row))  # a click highlights the row...
        assert t.highlighted_id() == job_id and isinstance(app.screen, JobsScreen)
        await pilot.click("#jobs", offset=(20, row))  # ...and a click on the highlighted row opens it
        detail = app.screen
        assert isinstance(detail, JobDetailScreen) and detail.job_id == job_id
        log = detail.query_one(LogView)
        await until(pilot, lambda: any("tick 1" in text for text, _ in log.texts))
        # live: lines are on screen while the job still runs
        assert (await app.client.get_job_status(job_id)) is S.RUNNING
        assert not any("tick 11" in text for text, _ in log.texts)
        await until(pilot, lambda: any("tick 11" in text for text, _ in log.texts))
        await until(pilot, lambda: detail.job is not None and detail.job.status is S.COMPLETED)
        assert [t.split(" ", 1)[1] for t, _ in log.texts if "tick" in t] == [f"tick {i}" for i in range(12)]
        await pilot.press("p")  # pause following, then search the log
        assert not log.following
        await pilot.press("slash", *"tick 7", "enter")
        assert log.matches and "tick 7" in log.texts[log.matches[0]][0]
        await pilot.press("escape")
        assert isinstance(app.screen, JobsScreen)
        assert table(app).jobs[job_id].status is S.COMPLETED


async def test_cancel_through_the_confirm_modal(daemon: Daemon) -> None:
    job_id = await asyncio.to_thread(submit, daemon, ["sleep", "60"], f"sleeper-{uuid.uuid4().hex[:6]}")
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        t = await highlight(pilot, app, job_id)
        await until(pilot, lambda: t.jobs[job_id].status is S.RUNNING)  # moved there by the event stream
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep it
        assert isinstance(app.screen, JobsScreen) and t.jobs[job_id].status is S.RUNNING
        await pilot.press("c")
        await pilot.press("y")
        await until(pilot, lambda: t.jobs[job_id].status is S.CANCELLED)
        assert "CANCELLED" in str(t.get_cell(job_id, "status"))
    assert daemon.client().get_job_status(job_id) is S.CANCELLED


async def test_hold_and_release_keys(daemon: Daemon) -> None:
    spec = {"command": ["true"], "name": f"held-{uuid.uuid4().hex[:6]}", "hold": True}
    job_id = (await asyncio.to_thread(daemon.client().submit_job, spec)).id
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        t = await highlight(pilot, app, job_id)
        assert t.jobs[job_id].reason == "held by user"
        await pilot.press("u")
        await until(pilot, lambda: t.jobs[job_id].status is S.COMPLETED)
        await pilot.press("h")  # too late: one line says why
        await until(pilot, lambda: any("only a waiting job can be held" in str(n.message)
                                       for n in app._notifications))


async def test_an_array_is_one_row_with_its_progress_and_a_opens_its_tasks(daemon: Daemon) -> None:
    spec = {"command": ["true"], "name": f"arr-{uuid.uuid4().hex[:6]}", "array": "0-3"}
    array = (await asyncio.to_thread(daemon.client().submit_job, spec)).id
    app = app_for(daemon)
    async with app.run_test(size=(160, 40)) as pilot:
        t = await highlight(pilot, app, array)
        await until(pilot, lambda: t.jobs[array].array is not None and t.jobs[array].array.completed == 4, 60)
        assert f"{array}_0" not in t.jobs  # its tasks are not rows of their own
        await pilot.press("a")
        tasks = await until(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.array == array
                            and len(app.screen.table.jobs) == 4 and app.screen.table)
        assert sorted(tasks.jobs) == [f"{array}_{i}" for i in range(4)]


async def test_new_jobs_appear_live_and_a_selection_is_cancelled_together(daemon: Daemon) -> None:
    tag = uuid.uuid4().hex[:6]
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.cluster is not None and app.cluster.health is not None)
        await pilot.pause(0.5)  # the event stream is attached (it follows from "now")
        quick = await asyncio.to_thread(submit, daemon, ["true"], f"quick-{tag}")
        t = await until(pilot, lambda: quick in table(app).jobs and table(app))
        assert t.order[0] == quick  # newest first, prepended by the event stream
        await until(pilot, lambda: t.jobs[quick].status is S.COMPLETED)

        ids = [await asyncio.to_thread(submit, daemon, ["sleep", "60"], f"pair-{tag}-{i}") for i in range(2)]
        for job_id in ids:
            await highlight(pilot, app, job_id)
            await pilot.press("space")
        assert t.selected == set(ids)
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen) and "2 selected jobs" in str(app.screen.question)
        await pilot.press("y")
        await until(pilot, lambda: all(t.jobs[i].status is S.CANCELLED for i in ids))
        await until(pilot, lambda: not t.selected)  # done: the marks go


async def test_filter_by_name_and_status_toggles(daemon: Daemon) -> None:
    tag = uuid.uuid4().hex[:6]
    client = daemon.client(timeout=60)
    ok = await asyncio.to_thread(client.submit_command, ["true"], name=f"alpha-{tag}-ok")
    bad = await asyncio.to_thread(client.submit_command, ["false"], name=f"alpha-{tag}-bad")
    other = await asyncio.to_thread(client.submit_command, ["true"], name=f"beta-{tag}")
    for job_id in (ok, bad, other):
        await asyncio.to_thread(client.wait, job_id, 60)
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        t = await until(pilot, lambda: other in table(app).jobs and table(app))
        await pilot.press("slash", *f"alpha-{tag}", "enter")
        await until(pilot, lambda: set(t.jobs) == {ok, bad})
        await pilot.press("3")  # failed only
        await until(pilot, lambda: set(t.jobs) == {bad})
        await pilot.press("4")  # and completed
        await until(pilot, lambda: set(t.jobs) == {ok, bad})
        await pilot.press("0")  # every status again
        await pilot.press("1")  # running only: none of these
        await until(pilot, lambda: not t.jobs)
        await pilot.press("escape")  # clears the filters
        await until(pilot, lambda: {ok, bad, other} <= set(t.jobs))


async def test_pages_load_as_the_cursor_nears_the_end_and_the_window_stays_bounded(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_screen, "PAGE", 20)
    monkeypatch.setattr(jobs_screen, "MAX_PAGES", 3)
    monkeypatch.setattr(jobs_screen, "AHEAD", 5)
    tag = uuid.uuid4().hex[:6]
    client = daemon.client(timeout=60)
    anchor = await asyncio.to_thread(client.submit_command, ["sleep", "60"], name=f"anchor-{tag}")
    refs = await asyncio.to_thread(client.submit_batch, [
        {"kind": "command", "command": ["true"], "name": f"page-{tag}-{i:03d}", "dependencies": [anchor]}
        for i in range(130)])  # they wait for the anchor: a stable listing of 130 jobs
    names = [f"page-{tag}-{i:03d}" for i in reversed(range(130))]  # newest first
    app = app_for(daemon)
    try:
        async with app.run_test(size=(120, 18)) as pilot:  # a view much smaller than the window
            t = await until(pilot, lambda: table(app).row_count and table(app))
            await pilot.press("slash", *f"page-{tag}", "enter")
            await until(pilot, lambda: [t.jobs[i].name for i in t.order] == names[:20])
            seen, most = set(), 0
            for _ in range(40):  # down to the oldest job
                if names[-1] in {t.jobs[i].name for i in t.order}:
                    break
                t.move_cursor(row=t.row_count - 1)
                moved_to = t.highlighted_id()
                await pilot.pause(0.1)
                assert t.highlighted_id() == moved_to  # the cursor stays on its job as pages come and go
                seen |= {t.jobs[i].name for i in t.order}
                most = max(most, t.row_count)
                rows = [t.jobs[i].name for i in t.order]
                assert rows == names[names.index(rows[0]):names.index(rows[0]) + len(rows)]  # contiguous
            assert seen == set(names) and most <= 60  # every job came by, never more than 3 pages held
            for _ in range(40):  # and back up to the newest
                if names[0] in {t.jobs[i].name for i in t.order}:
                    break
                t.move_cursor(row=0)
                moved_to = t.highlighted_id()
                await pilot.pause(0.1)
                assert t.highlighted_id() == moved_to
                assert t.row_count <= 60
            await pilot.press("o", "o")  # sort by the next columns: id, then name
            assert t.sort_column == "name"
            shown = [str(t.get_row_at(n)[2]) for n in range(t.row_count)]
            assert shown == sorted(shown)
            await pilot.click("#jobs", offset=(22, 0))  # the NAME header again: descending
            await pilot.pause(0.3)
            shown = [str(t.get_row_at(n)[2]) for n in range(t.row_count)]
            assert t.sort_reverse and shown == sorted(shown, reverse=True)
    finally:
        await asyncio.to_thread(client.cancel_job, anchor)  # its dependents are cancelled with it
    assert len(refs) == 130


async def test_80x24_every_screen_renders(daemon: Daemon) -> None:
    job_id = await asyncio.to_thread(submit, daemon, ["echo", "small screen"], f"small-{uuid.uuid4().hex[:6]}")
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        await highlight(pilot, app, job_id)
        assert table(app).size.height >= 10  # the table keeps most of the screen
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = {row[1] for row in app.screen.rows}
        assert {"c", "/", "q", "?", "n", "t", "s"} <= keys
        await pilot.press("escape")
        await pilot.press("enter")
        assert isinstance(app.screen, JobDetailScreen)
        await until(pilot, lambda: any("small screen" in text for text, _ in app.screen.query_one(LogView).texts))
        await pilot.press("escape", "ctrl+p")
        await pilot.press(*"retry")
        await pilot.pause(0.3)
        await pilot.press("escape")
        assert isinstance(app.screen, JobsScreen)


def test_a_burst_of_changes_coalesces() -> None:
    """A queued JobsChanged hands its changes to the next one: nothing lost, one redraw."""
    first = JobsChanged([JobChange(seq=1, job_id="a", to_status=S.PENDING)])
    second = JobsChanged([JobChange(seq=2, job_id="a", to_status=S.RUNNING)])
    assert first.can_replace(second)
    assert [c.seq for c in second.changes] == [1, 2]


async def test_survives_a_daemon_restart(daemon: Daemon) -> None:
    """Last in this module: it restarts the module's daemon."""
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.cluster is not None and app.cluster.health is not None)
        await pilot.pause(0.5)
        before = await asyncio.to_thread(submit, daemon, ["true"], "before-restart")
        await until(pilot, lambda: before in table(app).jobs)
        await asyncio.to_thread(daemon.stop)
        await until(pilot, lambda: app.link)
        header = str(app.screen.query_one("#header").render())
        assert "reconnecting" in header
        await asyncio.to_thread(daemon.start)
        await until(pilot, lambda: not app.link)
        after = await asyncio.to_thread(submit, daemon, ["true"], "after-restart")
        await until(pilot, lambda: after in table(app).jobs and table(app).jobs[after].status is S.COMPLETED)


# -- snapshots, fixed data ---------------------------------------------------------------------------
T0 = datetime(2026, 1, 2, 12, 0, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(minutes=30)


def fixed_jobs() -> list[JobView]:
    shapes = [("train-resnet", S.RUNNING, 5, "gpu-a", 2.0, 1.0), ("etl-daily", S.PENDING, 0, None, 1.0, 0.0),
              ("sweep-lr-0.1", S.COMPLETED, 0, "node-1", 1.0, 0.0), ("sweep-lr-0.01", S.FAILED, 0, "node-2", 1.0, 0.0),
              ("backup", S.CANCELLED, -1, "node-1", 0.5, 0.0), ("huge", S.REJECTED, 0, None, 512.0, 0.0),
              ("report", S.SUBMITTED, 1, None, 1.0, 0.0)]
    jobs = []
    for n, (name, status, pri, node, cpu, gpu) in enumerate(shapes):
        created = T0 + timedelta(minutes=n)
        started = created + timedelta(seconds=20) if node else None
        ended = started + timedelta(minutes=3, seconds=7) if started and status not in (S.RUNNING,) else None
        attempts = [AttemptView(number=1, status=status, node=node, pid=4100 + n, started_at=started, ended_at=ended,
                                exit_code=None if status is S.RUNNING else (1 if status is S.FAILED else 0))] \
            if node else []
        jobs.append(JobView(id=f"{n:02d}c0ffee{n:04d}", name=name, status=status, priority=pri,
                            tenant="ml" if n % 2 else "ops", node=node, created_at=created, started_at=started,
                            ended_at=ended, attempts_made=len(attempts), attempts=attempts,
                            reason="exit code 1" if status is S.FAILED else None,
                            spec=JobSpec(command=["python", f"{name}.py"], name=name,
                                         resources=Resources(cpu=cpu, gpu=gpu))))
    return list(reversed(jobs))  # newest first, as the daemon lists them


class FixedClient:
    """The few async methods the jobs and detail screens call, answering fixed data."""

    addresses: list[str] = []

    def __init__(self) -> None:
        self.jobs = fixed_jobs()
        self.listed = asyncio.Event()

    async def list_jobs(self, status: list[str] | None = None, name: str | None = None, limit: int = 100,
                        cursor: str | None = None, page: bool = False, **_: Any) -> JobList:
        self.listed.set()
        jobs = [j for j in self.jobs if not status or j.status.value in status]
        return JobList(jobs=jobs[:limit], next_cursor=None)

    async def get_job(self, job_id: str) -> JobView:
        return next(j for j in self.jobs if j.id == job_id)

    async def get_job_events(self, job_id: str) -> list[JobEventView]:
        job = await self.get_job(job_id)
        path = [(None, S.SUBMITTED), (S.SUBMITTED, S.PENDING), (S.PENDING, S.RUNNING), (S.RUNNING, job.status)]
        return [JobEventView(time=job.created_at + timedelta(seconds=10 * n), from_status=a, to_status=b,
                             attempt=1 if b in (S.RUNNING, job.status) else 0) for n, (a, b) in enumerate(path)]

    async def get_job_result(self, job_id: str) -> Any:
        return {"accuracy": 0.93, "epochs": 12}

    async def stream_job_logs(self, job_id: str, follow: bool = True, tail: int | None = None
                              ) -> AsyncIterator[LogEntry]:
        for n in range(6):
            yield LogEntry(timestamp=T0 + timedelta(seconds=n), message=f"epoch {n} loss {1 / (n + 1):.3f}",
                           stream="stderr" if n == 4 else "stdout")

    async def stream_events(self, after: int | None = None, follow: bool = True) -> AsyncIterator[JobChange]:
        yield JobChange(seq=0, kind="heartbeat")  # live: the screens load
        await asyncio.Event().wait()  # a quiet cluster: nothing changes

    async def health_check(self) -> Health:
        return Health(status="ok", version="0.1.0", pid=1, uptime_s=3600, role="leader", database={"ok": True},
                      ray=RayHealth(connected=True, address="127.0.0.1:6379", nodes=3,
                                    resources={"CPU": 16, "GPU": 2, "memory": 64 * 2**30},
                                    available={"CPU": 13, "GPU": 1, "memory": 60 * 2**30}))

    async def get_statistics(self) -> Stats:
        return Stats(total_jobs=7, active_jobs=3, by_status={"RUNNING": 1, "PENDING": 1, "FAILED": 1}, queue_depth=1,
                     running_jobs=1, max_jobs=1000, failed_last_hour=1)

    async def close(self) -> None:
        pass


@pytest.fixture
def utc() -> Iterator[None]:
    """Times on screen are local: pin the zone so the pictures are the same everywhere."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def fixed_app() -> SageOpsApp:
    return SageOpsApp("unix:///run/sage-ops/sage-ops.sock", client=FixedClient(), clock=lambda: NOW)


async def _loaded(pilot: Any) -> None:
    await until(pilot, lambda: len(table(pilot.app).jobs) == 7 and pilot.app.cluster is not None, 10)


async def _detail(pilot: Any) -> None:
    await _loaded(pilot)
    await pilot.press("down", "down", "enter")
    screen = pilot.app.screen
    await until(pilot, lambda: isinstance(screen, JobDetailScreen) and screen.job is not None
                and not screen.streaming and len(screen.query_one(LogView).texts) == 6, 10)
    await pilot.pause()


class BurstClient(FixedClient):
    """1,000 changes of state in a burst, arriving in network-sized chunks."""

    async def stream_events(self, after: int | None = None, follow: bool = True) -> AsyncIterator[JobChange]:
        cycle = [S.PENDING, S.RUNNING, S.COMPLETED, S.FAILED]
        yield JobChange(seq=0, kind="heartbeat")
        await self.listed.wait()  # the burst comes on top of the first page, as the daemon's would
        for seq in range(1, 1001):
            job = self.jobs[seq % len(self.jobs)]
            yield JobChange(seq=seq, job_id=job.id, name=job.name, to_status=cycle[seq % 4], attempt=1, time=NOW)
            if seq % 20 == 0:
                await asyncio.sleep(0)
        await asyncio.Event().wait()


async def test_a_burst_of_1000_events_is_a_few_redraws(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[int]] = []  # the seqs of each batch the jobs screen handled
    handle = JobsScreen.on_jobs_changed

    def counting(screen: JobsScreen, msg: JobsChanged) -> None:
        seen.append([c.seq for c in msg.changes])
        handle(screen, msg)

    monkeypatch.setattr(JobsScreen, "on_jobs_changed", counting)
    app = SageOpsApp("unix:///x.sock", client=BurstClient(), clock=lambda: NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: sum(map(len, seen)) == 1000, 10)
        assert len(seen) <= 10  # batched (~100 ms) and merged when queued, not one redraw per event
        assert [seq for batch in seen for seq in batch] == list(range(1, 1001))  # none lost, in order
        t = table(app)
        await until(pilot, lambda: t.jobs[app.client.jobs[1000 % 7].id].status is S.PENDING, 10)
        last = {app.client.jobs[seq % 7].id: [S.PENDING, S.RUNNING, S.COMPLETED, S.FAILED][seq % 4]
                for seq in range(1, 1001)}
        assert {job_id: t.jobs[job_id].status for job_id in last} == last


async def test_the_app_keeps_what_it_is_made_of_out_of_full_collections() -> None:
    """Full garbage collections scanned the whole app and made the slowest screen switches."""
    gc.unfreeze()
    app = fixed_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await _loaded(pilot)
        assert await until(pilot, lambda: gc.get_freeze_count() > 0, 10)
    gc.unfreeze()


class GatedClient(FixedClient):
    """An event stream that goes live only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def stream_events(self, after: int | None = None, follow: bool = True) -> AsyncIterator[JobChange]:
        await self.gate.wait()
        yield JobChange(seq=0, kind="heartbeat")
        await asyncio.Event().wait()


async def test_the_table_loads_once_the_event_stream_is_live() -> None:
    """No change may fall between the first page and the stream: the page waits for the stream."""
    client = GatedClient()
    app = SageOpsApp("unix:///x.sock", client=client, clock=lambda: NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        assert not client.listed.is_set()
        client.gate.set()
        await until(pilot, lambda: len(table(app).jobs) == 7, 10)


def test_a_change_carries_the_rows_other_fields() -> None:
    job = fixed_jobs()[1]  # PENDING, no node
    change = JobChange(seq=9, job_id=job.id, to_status=S.RUNNING, attempt=1, time=NOW, priority=7, node="gpu-b")
    view = with_change(job, change)
    assert (view.status, view.node, view.priority, view.attempts_made, view.started_at) == (
        S.RUNNING, "gpu-b", 7, 1, NOW)
    done = with_change(view, JobChange(seq=10, job_id=job.id, to_status=S.FAILED, time=NOW, exit_code=3))
    assert (done.exit_code, done.node, done.ended_at) == (3, "gpu-b", NOW)


async def test_no_color_keeps_symbols_and_drops_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(pilot)
        assert app.no_color
        cell = table(app).get_cell("03c0ffee0003", "status")
        assert cell.plain == "✘ FAILED" and cell.style.color is None and cell.style.bold


def test_snapshot_jobs_screen(snap_compare: Any, utc: None) -> None:
    assert snap_compare(fixed_app(), terminal_size=(110, 24), run_before=_loaded)


def test_snapshot_jobs_screen_80x24_filtered(snap_compare: Any, utc: None) -> None:
    async def run_before(pilot: Any) -> None:
        await _loaded(pilot)
        await pilot.press("1", "3", "space")
        await until(pilot, lambda: len(table(pilot.app).jobs) == 2, 10)

    assert snap_compare(fixed_app(), terminal_size=(80, 24), run_before=run_before)


def test_snapshot_job_detail_screen(snap_compare: Any, utc: None) -> None:
    assert snap_compare(fixed_app(), terminal_size=(110, 34), run_before=_detail)


def test_snapshot_help_screen(snap_compare: Any, utc: None) -> None:
    async def run_before(pilot: Any) -> None:
        await _loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(fixed_app(), terminal_size=(80, 24), run_before=run_before)

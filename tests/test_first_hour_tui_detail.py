"""Issue 22, the TUI's detail side: the submit form under a burst of keys, the log pane's wrap, full
screen, timestamps, attempt selector and save, the events list's hint, and the graph following the
event stream. Through Pilot against a real daemon and real jobs."""

from __future__ import annotations

import asyncio
import os
import sys
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, until
from textual import events
from textual.app import _character_to_key
from textual.keys import REPLACED_KEYS, _get_unicode_name_from_key
from textual.widgets import Static

from sage_ops.lifecycle import JobStatus
from sage_ops.tui.app import SageOpsApp
from sage_ops.tui.screens.graph import GraphScreen
from sage_ops.tui.screens.job_detail import JobDetailScreen
from sage_ops.tui.screens.jobs import JobsScreen, name_glob
from sage_ops.tui.screens.submit import SubmitScreen
from sage_ops.tui.widgets.log_view import MAX_LINES, LogView


def app_for(daemon: Daemon) -> SageOpsApp:
    return SageOpsApp(f"unix://{daemon.socket}")


def burst(app: Any, keys: Iterable[str]) -> None:
    """Every key into the app's queue at once, as a terminal delivers a paste or a fast typist's keys
    (Pilot's `press` waits for the app to be idle after each key, which hides what a burst does)."""
    for key in keys:
        if len(key) == 1 and not key.isalnum():
            key = _character_to_key(key)
        try:
            char: str | None = unicodedata.lookup(_get_unicode_name_from_key(REPLACED_KEYS.get(key, key)))
        except KeyError:
            char = key if len(key) == 1 else None
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)


def typed(name: str) -> list[str]:
    """The keys of a whole form, fields in order, tab between them, enter at the end."""
    fields = ["echo a-b c", "", name, "0.5", "0", "64MB", "", "", "", "2", "5"]  # ..., custom, after, array, ...
    keys: list[str] = []
    for n, text in enumerate(fields):
        keys += [*text] + (["tab"] if n < len(fields) - 1 else ["enter"])
    return keys


async def submitted(pilot: Any, name: str) -> Any:
    """What the daemon holds of the job the form sent: (command, name, cpu, gpu, memory, retries, priority)."""
    client = pilot.app.client
    while not (jobs := await client.list_jobs(name=name)):
        await pilot.pause(0.1)  # the test's timeout bounds it
    view = await client.get_job(jobs[0].id)
    s = view.spec
    return (s.command, view.name, s.resources.cpu, s.resources.gpu, s.resources.memory, s.retry_policy.max_retries,
            view.priority)


EXPECTED = (["echo", "a-b", "c"], None, 0.5, 0.0, 64 * 10**6, 2, 5)


# -- 1. the submit form never loses or misroutes keys ------------------------------------------
async def test_a_burst_of_keys_in_the_open_form_fills_each_field(daemon: Daemon) -> None:
    app = app_for(daemon)
    name = f"burst-{uuid.uuid4().hex[:6]}"
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, SubmitScreen) and app.focused is not None)
        burst(app, typed(name))
        assert await submitted(pilot, name) == (*EXPECTED[:1], name, *EXPECTED[2:])


async def test_a_burst_that_opens_the_form_lands_in_it(daemon: Daemon) -> None:
    app = app_for(daemon)
    name = f"burst-{uuid.uuid4().hex[:6]}"
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live)
        burst(app, ["s", *typed(name)])  # `s` and the form's keys in one go: none reaches the jobs table
        assert await submitted(pilot, name) == (*EXPECTED[:1], name, *EXPECTED[2:])


async def test_a_burst_after_slash_is_the_filter_not_table_keys(daemon: Daemon) -> None:
    """`/sweep` typed fast filters by `sweep`; before, `s` reached the table and opened the form."""
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live)
        burst(app, ["/", *"sweep", "enter"])
        await until(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.glob is not None)
        assert app.screen.glob == name_glob("sweep")


# -- 2. the log pane: wrap, full screen, timestamps, attempts, save --------------------------------
LONG = "x" * 300
RETRIED = f"""
import os, sys
print("first try" if not os.path.exists(sys.argv[1]) else "second try", flush=True)
if not os.path.exists(sys.argv[1]):
    open(sys.argv[1], "w").close()
    print({LONG!r}, flush=True)
    sys.exit(3)
"""


def finished(daemon: Daemon, spec: dict[str, Any]) -> str:
    client = daemon.client(timeout=120)
    job_id = client.submit_job(spec).id
    client.wait(job_id, timeout=120)
    return job_id


@pytest.fixture(scope="module")
def retried(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A job that failed once (a first-try line and a 300-character line) and passed on its retry."""
    flag = tmp_path_factory.mktemp("retried") / "tried"
    return finished(daemon, {"name": "retried", "command": [sys.executable, "-c", RETRIED, str(flag)],
                             "retry_policy": {"max_retries": 1}})


async def detail(app: SageOpsApp, pilot: Any, job_id: str) -> tuple[JobDetailScreen, LogView]:
    """The detail screen of `job_id` once its record and its whole log are in."""
    screen = JobDetailScreen(job_id)
    await app.push_screen(screen)
    await until(pilot, lambda: screen.job is not None and screen.job.status is JobStatus.COMPLETED
                and not screen.streaming and screen.query_one(LogView).texts)
    await pilot.pause()
    return screen, screen.query_one(LogView)


def messages(log: LogView) -> list[str]:
    return [text.split(" ", 1)[1] if text[:2].isdigit() else text for text, _ in log.texts]


async def test_attempts_are_marked_and_one_can_be_chosen(daemon: Daemon, retried: str) -> None:
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        _, log = await detail(app, pilot, retried)
        assert messages(log) == ["first try", LONG, "── attempt 2 ──", "second try"]
        await pilot.press("a")
        assert messages(log) == ["first try", LONG]
        await pilot.press("a")
        assert messages(log) == ["second try"]
        await pilot.press("a")
        assert len(log.texts) == 4


async def test_timestamps_toggle(daemon: Daemon, retried: str) -> None:
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        _, log = await detail(app, pilot, retried)
        await pilot.press("t")
        assert log.texts[0][0] == "first try"


async def test_wrap_toggle(daemon: Daemon, retried: str) -> None:
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        _, log = await detail(app, pilot, retried)
        before = len(log.lines)
        await pilot.press("w")
        await pilot.pause()
        assert len(log.lines) > before  # the 300-character line takes several rows


async def test_full_screen_toggle(daemon: Daemon, retried: str) -> None:
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        screen, log = await detail(app, pilot, retried)
        await pilot.press("f")
        await pilot.pause()
        assert log.outer_size.height == 40 - 1  # all but the footer
        await pilot.press("escape")
        await pilot.pause()
        assert screen.query_one("#info").display and app.screen is screen


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    before = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(before)


async def test_save_writes_the_whole_log_not_only_the_loaded_lines(daemon: Daemon, in_tmp: Path) -> None:
    n = MAX_LINES + 5000
    job_id = await asyncio.to_thread(finished, daemon, {
        "name": "chatty", "command": [sys.executable, "-c", f"for i in range({n}): print(f'line {{i}}')"]})
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        _, log = await detail(app, pilot, job_id)
        assert len(log.texts) == MAX_LINES  # the pane keeps the last MAX_LINES
        await pilot.press("ctrl+s")
        saved = in_tmp / f"{job_id}.log"
        await until(pilot, lambda: any(str(saved) in n.message for n in app._notifications))
        lines = saved.read_text().splitlines()
        assert [line.split(" ", 2)[2] for line in lines] == [f"line {i}" for i in range(n)]


async def test_the_events_list_says_what_is_below_it(daemon: Daemon, retried: str) -> None:
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, _ = await detail(app, pilot, retried)
        info = screen.query_one("#info")
        events = await app.client.get_job_events(retried)  # 80x24: the overview alone fills the pane
        await until(pilot, lambda: f"… {len(events)} more events" in str(info.border_subtitle), timeout=10)
        await pilot.press("e", "end")
        await pilot.pause()
        assert not info.border_subtitle


# -- 4. the graph follows the event stream -----------------------------------------------------
WAIT_FOR = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.05)"


async def test_the_graph_follows_the_event_stream(daemon: Daemon, tmp_path: Path) -> None:
    client = daemon.client(timeout=60)
    flag = tmp_path / "go"
    a = client.submit_job({"name": "gate", "command": [sys.executable, "-c", WAIT_FOR, str(flag)]}).id
    b = client.submit_job({"name": "after-gate", "command": ["true"], "dependencies": [a]}).id
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = GraphScreen(b, refresh_s=3600)  # no polling: only the event stream can change it
        await app.push_screen(screen)
        await until(pilot, lambda: screen.graph is not None and {n.id for n in screen.graph.nodes} == {a, b})
        c = (await app.client.submit_job({"name": "after-that", "command": ["true"], "dependencies": [b]})).id
        await until(pilot, lambda: {n.id for n in screen.graph.nodes} == {a, b, c}, timeout=30)
        flag.touch()
        await until(pilot, lambda: screen.graph.done == 3, timeout=60)
        assert "3/3 done" in str(screen.query_one("#graph-counts", Static).render())

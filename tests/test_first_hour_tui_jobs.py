"""Issue 22, the TUI's jobs list next to k9s: the daemon sorts every job (not the rows loaded),
live rows land in the table's order, exit code / reason / memory columns, `j`/`k`, the `:`
command line, human help titles and a footer that fits 80 columns. A real daemon and real jobs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Daemon, until
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from sage_ops.client import JobManagerClient
from sage_ops.errors import SageOpsError
from sage_ops.lifecycle import JobStatus
from sage_ops.tui.app import SageOpsApp
from sage_ops.tui.screens import jobs as jobs_screen
from sage_ops.tui.screens.confirm import ConfirmScreen
from sage_ops.tui.screens.help import HelpScreen
from sage_ops.tui.screens.jobs import JobsScreen
from sage_ops.tui.screens.nodes import NodesScreen
from sage_ops.tui.widgets.job_table import JobTable

S = JobStatus


def table(app: SageOpsApp) -> JobTable:
    return app.screen_stack[0].query_one("#jobs", JobTable)


def names(t: JobTable) -> list[str]:
    return [t.jobs[i].name for i in t.order]


def shown_names(t: JobTable) -> list[str]:
    """The NAME cells top to bottom: what the user sees, not the table's bookkeeping."""
    column = t.shown.index("name")
    return [str(t.get_row_at(n)[column]) for n in range(t.row_count)]


@pytest.fixture
def gated(daemon: Daemon) -> Iterator[tuple[JobManagerClient, str, str]]:
    """A client, a tag and a gate job: jobs that depend on the gate wait (a stable listing)."""
    client = daemon.client(timeout=60)
    tag = uuid.uuid4().hex[:6]
    gate = client.submit_command(["sleep", "300"], name=f"gate-{tag}")
    yield client, tag, gate
    client.cancel_job(gate)  # its dependents are cancelled with it


def waiting(client: JobManagerClient, gate: str, names: list[str], **extra: Any) -> list[str]:
    refs = client.submit_batch([{"command": ["true"], "name": n, "dependencies": [gate], **extra} for n in names])
    return [r.id for r in refs]


# -- the daemon sorts -------------------------------------------------------------------------------
def test_a_sorted_listing_pages_through_every_job_once_in_order(gated: tuple[JobManagerClient, str, str]) -> None:
    client, tag, gate = gated
    for prio in (2, 0, 2, 1):  # ties on purpose: the id breaks them
        waiting(client, gate, [f"sortp-{tag}-{prio}-{n}" for n in range(4)], priority=prio)
    everything = client.list_jobs(name=f"sortp-{tag}-", limit=1000)
    expected = [j.id for j in sorted(everything, key=lambda j: (j.priority, j.id), reverse=True)]
    seen, cursor = [], None
    while True:
        page = client.list_jobs(name=f"sortp-{tag}-", limit=3, cursor=cursor, page=True, sort="priority", desc=True)
        seen += [j.id for j in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected


def test_a_sort_by_a_column_that_can_be_missing_puts_missing_first(gated: tuple[JobManagerClient, str, str]) -> None:
    client, tag, gate = gated
    done = client.submit_command(["sh", "-c", "exit 4"], name=f"sortx-{tag}-done")
    client.wait(done, 60)
    waiting(client, gate, [f"sortx-{tag}-wait-{n}" for n in range(3)])
    jobs = client.list_jobs(name=f"sortx-{tag}-", sort="exit_code", limit=2, page=True)
    rest = client.list_jobs(name=f"sortx-{tag}-", sort="exit_code", limit=2, cursor=jobs.next_cursor, page=True)
    assert [j.exit_code for j in jobs.jobs + rest.jobs] == [None, None, None, 4]


def test_the_cli_sorts_on_the_daemon_too(gated: tuple[JobManagerClient, str, str], daemon: Daemon) -> None:
    client, tag, gate = gated
    ids = dict(zip((1, 3, 2), waiting(client, gate, [f"sortc-{tag}-{n}" for n in range(3)]), strict=True))
    for prio, job_id in ids.items():
        client.set_priority(job_id, prio)
    out = daemon.run("jobs", "-q", "--name", f"sortc-{tag}-", "--sort", "priority", "--desc", check=True).stdout
    assert out.split() == [ids[3], ids[2], ids[1]]


def test_the_cli_says_a_bad_sort_key_in_one_line(daemon: Daemon) -> None:
    out = daemon.run("jobs", "--sort", "bogus")
    assert (out.returncode, out.stderr.count("\n")) == (1, 1)


def test_an_unknown_sort_key_is_a_one_line_error_naming_the_keys(daemon: Daemon) -> None:
    with pytest.raises(SageOpsError) as err:
        daemon.client().list_jobs(sort="bogus")
    assert "cannot sort by 'bogus'" in str(err.value) and "priority" in str(err.value) and "\n" not in str(err.value)


async def test_the_tui_sorts_every_job_not_only_the_rows_loaded(
        daemon: Daemon, gated: tuple[JobManagerClient, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_screen, "PAGE", 10)
    monkeypatch.setattr(jobs_screen, "AHEAD", 3)
    client, tag, gate = gated
    all_names = [f"srt-{tag}-{n:02d}" for n in range(35)]  # the oldest sorts first by name
    await asyncio.to_thread(waiting, client, gate, all_names)
    app = SageOpsApp(f"unix://{daemon.socket}")
    async with app.run_test(size=(120, 30)) as pilot:
        t = await until(pilot, lambda: table(app).row_count and table(app))
        await pilot.press("slash", *f"srt-{tag}", "enter")
        await until(pilot, lambda: names(t) == all_names[::-1][:10])  # newest first: one page
        await pilot.press("o", "o")  # by id, then by name
        await until(pilot, lambda: t.sort_column == "name" and names(t)[:1] == all_names[:1])
        assert shown_names(t) == all_names[:t.row_count]  # a page, or two if the next came at once
        t.move_cursor(row=t.row_count - 1)  # the next pages come in the same order
        await until(pilot, lambda: t.row_count > 10)
        assert shown_names(t) == all_names[:t.row_count]
        await pilot.press("O")  # reversed: the newest name first
        await until(pilot, lambda: names(t)[:1] == all_names[-1:])
        assert shown_names(t) == all_names[::-1][:t.row_count]


# -- live rows ------------------------------------------------------------------------------------------
async def test_a_live_batch_lands_in_the_tables_order(daemon: Daemon, gated: tuple[JobManagerClient, str, str]) -> None:
    client, tag, gate = gated
    app = SageOpsApp(f"unix://{daemon.socket}")
    async with app.run_test(size=(120, 30)) as pilot:
        t = await until(pilot, lambda: gate in table(app).jobs and table(app))
        batch = [f"live-{tag}-{n}" for n in range(6)]
        await asyncio.to_thread(waiting, client, gate, batch)
        await until(pilot, lambda: set(batch) <= set(names(t)))
        listed = [j.name for j in await asyncio.to_thread(client.list_jobs, name=f"live-{tag}-", limit=100)]
        assert listed == batch[::-1]  # the daemon's order: newest first
        assert [n for n in shown_names(t) if n in batch] == listed


async def test_a_live_job_lands_where_the_sort_puts_it(daemon: Daemon,
                                                      gated: tuple[JobManagerClient, str, str]) -> None:
    client, tag, gate = gated
    await asyncio.to_thread(waiting, client, gate, [f"pos-{tag}-{c}" for c in "bdf"])
    app = SageOpsApp(f"unix://{daemon.socket}")
    async with app.run_test(size=(120, 30)) as pilot:
        t = await until(pilot, lambda: table(app).row_count and table(app))
        await pilot.press("slash", *f"pos-{tag}", "enter", "o", "o")  # by name
        await until(pilot, lambda: t.sort_column == "name" and names(t) == [f"pos-{tag}-{c}" for c in "bdf"])
        await asyncio.to_thread(waiting, client, gate, [f"pos-{tag}-{c}" for c in "ec"])
        await until(pilot, lambda: len(t.order) == 5)
        assert shown_names(t) == [f"pos-{tag}-{c}" for c in "bcdef"]


# -- columns -------------------------------------------------------------------------------------------
async def test_exit_code_reason_and_memory_have_columns(daemon: Daemon) -> None:
    client = daemon.client(timeout=60)
    job_id = await asyncio.to_thread(client.submit_command, ["sh", "-c", "exit 3"],
                                     name=f"exit3-{uuid.uuid4().hex[:6]}", resources={"memory": "256MiB"})
    job = await asyncio.to_thread(client.wait, job_id, 60)
    app = SageOpsApp(f"unix://{daemon.socket}")
    async with app.run_test(size=(200, 30)) as pilot:
        t = await until(pilot, lambda: job_id in table(app).jobs and table(app))
        assert str(t.get_cell(job_id, "exit")) == "3"
        assert str(t.get_cell(job_id, "reason")) == job.reason
        assert str(t.get_cell(job_id, "res")) == "1c 256M"


# -- keys ------------------------------------------------------------------------------------------------
async def test_a_reason_that_looks_like_markup_is_shown_as_written(daemon: Daemon) -> None:
    """A reason quotes users' words (here the command that could not start): `[/x]` made the
    table's markup parser raise while drawing, and `[red]…` would restyle the row."""
    client = daemon.client()
    words = [f"[/x]-{uuid.uuid4().hex[:6]}", f"[red]evil-{uuid.uuid4().hex[:6]}"]
    jobs = [client.wait(client.submit_command([word]), 60) for word in words]
    assert all(word in (job.reason or "") for word, job in zip(words, jobs, strict=True))
    app = SageOpsApp(f"unix://{daemon.socket}")
    async with app.run_test(size=(200, 30)) as pilot:
        await until(pilot, lambda: all(job.id in table(app).jobs for job in jobs))
        await pilot.pause(0.2)  # drawn: a markup error would have ended the app
        assert app.is_running
        drawn = [table(app).render_line(y).text for y in range(table(app).size.height)]
        assert [w for w in words if any(w in line for line in drawn)] == words


async def test_j_and_k_move_down_and_up(daemon: Daemon, gated: tuple[JobManagerClient, str, str]) -> None:
    client, tag, gate = gated
    await asyncio.to_thread(waiting, client, gate, [f"jk-{tag}-{n}" for n in range(3)])
    app = SageOpsApp(f"unix://{daemon.socket}")
    async with app.run_test(size=(120, 30)) as pilot:
        t = await until(pilot, lambda: table(app).row_count >= 3 and table(app))
        await pilot.press("j", "j")
        assert t.cursor_row == 2
        await pilot.press("k")
        assert t.cursor_row == 1


async def test_the_command_line_switches_screens_and_cancels(daemon: Daemon) -> None:
    client = daemon.client(timeout=60)
    job_id = await asyncio.to_thread(client.submit_command, ["sleep", "60"], name=f"cmd-{uuid.uuid4().hex[:6]}")
    app = SageOpsApp(f"unix://{daemon.socket}")
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            t = await until(pilot, lambda: job_id in table(app).jobs and table(app))
            await pilot.press("colon", *"nodes", "enter")
            assert isinstance(app.screen, NodesScreen)
            await pilot.press("colon", *"jo", "enter")  # any unique start of a word
            assert isinstance(app.screen, JobsScreen)
            await pilot.press("colon", *"bogus", "enter")
            assert isinstance(app.screen, JobsScreen)
            t.move_cursor(row=t.get_row_index(job_id))
            await pilot.press("colon", *"cancel", "enter")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await until(pilot, lambda: t.jobs[job_id].status is S.CANCELLED)
            await pilot.press("colon", "q", "enter")
            await until(pilot, lambda: not app.is_running)
    finally:
        await asyncio.to_thread(client.cancel_job, job_id)


async def test_an_unknown_command_says_which_there_are(daemon: Daemon) -> None:
    app = SageOpsApp(f"unix://{daemon.socket}")
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: table(app).is_mounted)
        await pilot.press("colon", *"bogus", "enter")
        await until(pilot, lambda: app._notifications)
        message = next(iter(app._notifications)).message
        assert message.startswith("unknown command :bogus") and ":nodes" in message


async def test_help_is_titled_with_the_screens_name_and_lists_the_command_line(daemon: Daemon) -> None:
    app = SageOpsApp(f"unix://{daemon.socket}")
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: table(app).is_mounted)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen) and app.screen.heading == "Jobs"
        assert {":jobs", ":nodes", ":cancel", ":quit", "j", "k"} <= {row[1] for row in app.screen.rows}


async def test_the_footer_fits_80_columns_on_the_jobs_and_nodes_screens(daemon: Daemon) -> None:
    app = SageOpsApp(f"unix://{daemon.socket}")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: table(app).is_mounted)
        for key in ("", "n"):
            if key:
                await pilot.press(key)
                await until(pilot, lambda: isinstance(app.screen, NodesScreen) and app.screen.is_mounted)
            await pilot.pause()
            keys = sorted((k.region for k in app.screen.query_one(Footer).query(FooterKey) if k.display),
                          key=lambda r: r.x)
            assert keys and keys[-1].right <= 80
            assert all(a.right <= b.x for a, b in zip(keys, keys[1:]))  # none drawn over another

"""Issue 10: costs that stay flat as the store grows. Behaviour only (never timings): the counts
`stats` reads are kept exactly, and a listing picks its index by the matches without changing
what it returns."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from conftest import Daemon, wait_until

from sage_ops.bodies import JobFilter


def _jobs(names: list[str], tenant: str | None = None, first_seq: int = 1) -> list[dict[str, Any]]:
    now = time.time()
    return [{"id": f"{tenant or 'x'}{first_seq + i:08d}", "seq": first_seq + i, "name": name, "tenant": tenant,
             "status": "COMPLETED", "reason": None, "priority": 0, "kind": "command",
             "spec": '{"command": ["true"]}', "exit_code": 0, "result": None, "attempts_made": 1, "node": None,
             "created_at": now, "updated_at": now, "started_at": now, "ended_at": now} for i, name in enumerate(names)]


def _recounted(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT status, COUNT(*) FROM job GROUP BY status").fetchall())


def test_a_name_filter_returns_the_same_page_whichever_index_it_uses(tmp_path: Path) -> None:
    from sage_ops.server.storage import store as st

    store = st.Store(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        names = [f"many-{i % 7}" for i in range(st.FEW_NAMED + 500)] + ["few-a", "few-b", "few_c", "fewer"]
        rows = _jobs(names)
        with store.engine.begin() as conn:
            st.insert_jobs(conn, rows, [])
            for glob in ["many-*", "many-3", "few-*", "few?a", "few_c", "fewer", "f*", "*-a", "nothing*", "many-3*"]:
                got, _ = st.list_jobs(conn, JobFilter(name=glob), limit=50)
                regex = glob.replace("*", ".*").replace("?", ".")
                want = [r["id"] for r in reversed(rows) if re.fullmatch(regex, r["name"])][:50]
                assert [j.id for j in got] == want, glob
    finally:
        store.close()


def test_kept_counts_equal_a_count_of_every_job(tmp_path: Path) -> None:
    from sage_ops.lifecycle import JobStatus, transition
    from sage_ops.server.storage import store as st
    from sage_ops.server.storage.job_counts import counts_by_status

    store = st.Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with store.engine.begin() as conn:
            st.insert_jobs(conn, _jobs(["a", "b", "c"]) + _jobs(["d", "e"], tenant="t1", first_seq=4), [])
            rows = _jobs(["p"], first_seq=9)
            rows[0].update(status="PENDING", ended_at=None)
            st.insert_jobs(conn, rows, [])
            st.apply_transitions(conn, [transition(rows[0]["id"], JobStatus.PENDING, JobStatus.CANCELLED, "x", 0)])
            # a transition that no longer applies (the job moved meanwhile) counts nothing
            st.apply_transitions(conn, [transition(rows[0]["id"], JobStatus.PENDING, JobStatus.RUNNING, "x", 1)])
            assert counts_by_status(conn) == {"COMPLETED": 5, "CANCELLED": 1}
            assert counts_by_status(conn, "t1", scoped=True) == {"COMPLETED": 2}
            assert counts_by_status(conn, None, scoped=True) == {"COMPLETED": 3, "CANCELLED": 1}
    finally:
        store.close()


def test_stats_counts_match_the_jobs_after_a_mixed_workload(daemon: Daemon) -> None:
    client = daemon.client()
    before = client.get_statistics().by_status
    ok = [client.submit_job({"command": ["true"]}).id for _ in range(3)]
    bad = client.submit_job({"command": ["false"]}).id
    slow = client.submit_job({"command": ["sleep", "60"]}).id
    wait_until(lambda: client.get_job_status(slow) == "RUNNING", timeout=60)
    client.cancel_job(slow)
    for job in [*ok, bad]:
        client.wait(job)
    client.retry_job(bad)
    client.wait(bad)
    wait_until(lambda: not client.get_statistics().active_jobs, timeout=60)
    stats = client.get_statistics()
    assert stats.by_status["COMPLETED"] - before["COMPLETED"] == 3
    assert stats.by_status["FAILED"] - before["FAILED"] == 1
    assert stats.by_status["CANCELLED"] - before["CANCELLED"] == 1
    exact = _recounted(daemon.state / "sage-ops.db")
    assert {k: v for k, v in stats.by_status.items() if v} == exact
    assert stats.total_jobs == sum(exact.values())


@contextlib.asynccontextmanager
async def _hub(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """A store and its event hub, running until the block ends."""
    from sage_ops.server.services import event_stream as events
    from sage_ops.server.storage import store as st

    store = st.Store(f"sqlite:///{tmp_path / 'e.db'}")
    hub = events.EventHub(store, interval=0.01)
    runner = asyncio.create_task(hub.run())
    try:
        yield store, hub
    finally:
        runner.cancel()
        store.close()


async def _submitted(store: Any, names: list[str], first: int) -> None:
    """Jobs just submitted, each with its audit event, in one commit (what a batch leaves)."""
    from sage_ops.lifecycle import JobStatus, transition
    from sage_ops.server.storage import store as st

    rows = _jobs(names, first_seq=first)
    for r in rows:
        r.update(status="SUBMITTED", ended_at=None)
    evs = [st.event_row(transition(r["id"], None, JobStatus.SUBMITTED, "submitted"), time.time()) for r in rows]
    await store.write(lambda c: st.insert_jobs(c, rows, evs))


def test_event_followers_share_pages_and_a_slow_one_is_told_to_resync(tmp_path: Path, monkeypatch: Any) -> None:
    import json

    from sage_ops.server.services import event_stream as events

    monkeypatch.setattr(events, "QUEUE", 5)

    async def main() -> None:
        async with _hub(tmp_path) as (store, hub):
            fast, slow = (hub.follow(None, events.visible_to(None, True)) for _ in range(2))
            assert json.loads(await fast.__anext__())["kind"] == "heartbeat"
            assert json.loads(await slow.__anext__())["kind"] == "heartbeat"

            await _submitted(store, ["a", "b", "c"], 1)
            lines = (await asyncio.wait_for(fast.__anext__(), 10)).splitlines()
            while len(lines) < 3:  # one chunk per page the hub read: here, usually all three
                lines += (await asyncio.wait_for(fast.__anext__(), 10)).splitlines()
            assert [json.loads(x)["name"] for x in lines] == ["a", "b", "c"]
            # the slow follower has not read; three more events pass its bound of five
            await _submitted(store, ["d", "e", "f"], 4)
            fresh: list[str] = []
            while len(fresh) < 3:  # once the fast one has them, the hub has handed them to both
                fresh += [json.loads(x)["name"] for x in (await asyncio.wait_for(fast.__anext__(), 10)).splitlines()]
            assert fresh == ["d", "e", "f"]
            first = json.loads((await asyncio.wait_for(slow.__anext__(), 10)).splitlines()[0])
            assert first["kind"] == "resync"  # told, not dropped silently
            await fast.aclose()
            await slow.aclose()

    asyncio.run(main())


def test_a_follower_behind_gets_a_burst_page_by_page_in_order(tmp_path: Path, monkeypatch: Any) -> None:
    """Each chunk is one page as the hub encoded it, never the pages joined into one big copy per
    follower: a burst's buffers stay small (docs/performance.md, the event stream's pages)."""
    import json

    from sage_ops.server.services import event_stream as events

    monkeypatch.setattr(events, "PAGE", 2)

    async def main() -> list[list[str]]:
        async with _hub(tmp_path) as (store, hub):
            follower = hub.follow(None, events.visible_to(None, True))
            assert json.loads(await follower.__anext__())["kind"] == "heartbeat"
            await _submitted(store, ["a", "b", "c", "d", "e"], 1)
            while hub.last < 5:  # every page is queued for the follower before it reads one
                await asyncio.sleep(0.01)
            chunks: list[list[str]] = []
            while sum(map(len, chunks)) < 5:
                chunk = await asyncio.wait_for(follower.__anext__(), 10)
                chunks.append([json.loads(x)["name"] for x in chunk.splitlines()])
            await follower.aclose()
            return chunks

    chunks = asyncio.run(main())
    assert [name for chunk in chunks for name in chunk] == ["a", "b", "c", "d", "e"]
    assert max(map(len, chunks)) == 2


def test_an_event_page_is_sent_whole_to_an_admin_and_filtered_for_a_member() -> None:
    import json

    from sage_ops.server.services import event_stream as events
    from sage_ops.views import JobChange

    page = events._Page([JobChange(seq=s, job_id=f"j{s}", tenant=t) for s, t in [(1, "a"), (2, "b"), (3, "a")]])
    ids = lambda data: [json.loads(x)["job_id"] for x in data.splitlines()]  # noqa: E731
    assert page.after(0, events.visible_to(None, True)) is page.data  # the shared bytes, not a copy
    assert ids(page.after(1, events.visible_to(None, True))) == ["j2", "j3"]  # part sent while catching up
    assert ids(page.after(0, events.visible_to("a", False))) == ["j1", "j3"]
    assert page.after(3, events.visible_to("a", False)) == b""

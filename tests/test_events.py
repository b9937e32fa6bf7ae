"""The event stream (`GET /v1/events`): every job's changes of state in commit order, live, resumable
after any seq, and only the caller's tenant's jobs for members."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

from sage_ops.client import JobManagerClient
from sage_ops.errors import Invalid
from sage_ops.server.storage import store as st


def collect(client: JobManagerClient, until: Any, after: int | None = None) -> tuple[list[Any], threading.Thread]:
    """Follow the stream in a thread; returns once the stream is live (its first line, a heartbeat)."""
    seen: list[Any] = []
    ready = threading.Event()

    def run() -> None:
        for change in client.stream_events(after=after):
            seen.append(change)
            ready.set()
            if until(seen):
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60)
    assert seen[0].kind == "heartbeat"  # "live from here": what commits next is sent
    return seen, thread


def test_events_follow_live_in_order_and_resume(daemon: Daemon) -> None:
    client = daemon.client(timeout=60)
    first = client.submit_command(["true"])
    client.wait(first, timeout=60)
    ids: list[str] = []

    def all_done(seen: list[Any]) -> bool:
        done = {c.job_id for c in seen if c.kind == "job" and c.to_status == "COMPLETED"}
        return bool(ids) and set(ids) <= done

    seen, thread = collect(daemon.client(timeout=60), all_done)
    ids += [client.submit_command(["true"], name=f"ev-{i}") for i in range(3)]
    thread.join(60)
    assert not thread.is_alive()
    mine = [c for c in seen if c.job_id in ids]
    assert first not in {c.job_id for c in seen}  # from now on, not from the start
    seqs = [c.seq for c in seen if c.kind == "job"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for job_id in ids:
        path = [(c.from_status, c.to_status) for c in mine if c.job_id == job_id]
        assert path[0] == (None, "PENDING") and path[-1][1] == "COMPLETED"
        assert {c.name for c in mine if c.job_id == job_id} == {f"ev-{ids.index(job_id)}"}

    # a follower that joins after everyone left starts from the newest event, not where the
    # previous followers stopped
    quiet = client.submit_command(["true"], name="while-nobody-follows")
    client.wait(quiet, timeout=60)
    later: list[str] = []
    late, thread = collect(daemon.client(timeout=60),
                           lambda seen: bool(later) and any(c.job_id == later[0] and c.to_status == "COMPLETED"
                                                            for c in seen))
    later.append(client.submit_command(["true"], name="later"))
    thread.join(60)
    assert not thread.is_alive()
    assert quiet not in {c.job_id for c in late}

    # resume after a seq (a reconnecting TUI): exactly what came after, without following
    cut = mine[2].seq
    replay = list(client.stream_events(after=cut, follow=False))
    assert [c.seq for c in replay if c.job_id in ids] == [c.seq for c in mine if c.seq > cut]


def test_members_see_only_their_tenants_events(daemon: Daemon) -> None:
    daemon.run("tenant", "create", "evt", check=True)
    token = json.loads(daemon.run("token", "create", "--tenant", "evt", "--name", "ev", "--json",
                                  check=True).stdout)["token"]
    admin = daemon.client(timeout=60)
    start = max([c.seq for c in admin.stream_events(after=0, follow=False)] or [0])
    other = admin.submit_command(["true"])
    mine = admin.submit_command(["true"], tenant="evt")
    admin.wait(other, timeout=60)
    admin.wait(mine, timeout=60)
    member = JobManagerClient(f"unix://{daemon.socket}", token=token)
    seen = {c.job_id for c in member.stream_events(after=start, follow=False)}
    assert seen == {mine}
    bad = daemon.run("--token", token, "jobs")  # sanity: the token works for reads
    assert bad.returncode == 0


async def test_the_store_tells_the_event_hub_after_a_commit_and_not_after_a_refused_write(tmp_path: Path) -> None:
    """The hub reads the table as soon as this daemon commits, not at its next poll."""
    store = st.Store(f"sqlite:///{tmp_path / 'sage-ops.db'}", "OFF")
    told: list[int] = []
    store.committed.append(lambda: told.append(1))
    try:
        await store.write(lambda c: None)
        assert told == [1]
        with pytest.raises(Invalid):
            await store.write(lambda c: (_ for _ in ()).throw(Invalid("no")))
        assert told == [1]
    finally:
        store.close()

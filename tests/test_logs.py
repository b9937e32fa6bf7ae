"""Job logs as blocks: the encoder (the file format is the API's NDJSON), the runner's per-read
framing, the log store (append, follow, tail, files of the older format), the dispatcher's bound
on log data the daemon has not taken, and one job's 200,000 lines end to end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from conftest import Daemon
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_ops.server.storage.job_output import Output, cut_line, encode_lines, masker, split_lines
from sage_ops.server.storage.logs import READ_BLOCK, LogStore
from sage_ops.views import LogEntry

T = 1_700_000_000.123456
MESSAGES = ["plain", "", 'quote " and \\ backslash \\n not a newline', "tab\tcr\rnul\x00 esc\x1b del\x7f",
            "é ü 中文 😀 \u2028\u2029", "\ufffd", " leading and trailing "]


def entries(data: bytes) -> list[LogEntry]:
    return [LogEntry.model_validate_json(line) for line in data.split(b"\n") if line]


# -- the encoder --------------------------------------------------------------------------------

def test_encoder_round_trips_through_log_entry_and_matches_pydantic() -> None:
    lines = [(T + i % 2, "stdout" if i % 3 else "stderr", m, 1 + i % 2) for i, m in enumerate(MESSAGES)]
    lines.append((1_700_000_000.0, "system", "a whole second", 3))
    data = encode_lines(lines)
    assert data.endswith(b"\n") and data.count(b"\n") == len(lines)
    for (t, stream, message, attempt), raw in zip(lines, data.split(b"\n")):
        entry = LogEntry.model_validate_json(raw)
        assert (entry.stream, entry.message, entry.attempt) == (stream, message, attempt)
        assert entry.timestamp == datetime.fromtimestamp(t, timezone.utc)
        assert raw == entry.model_dump_json().encode()  # what the API sent before, byte for byte
        assert json.loads(raw)["timestamp"].endswith("Z")


def test_encoder_edge_cases() -> None:
    assert encode_lines([]) == b""
    assert entries(encode_lines([(T, "system", "line\nbreak", 1)]))[0].message == "line\nbreak"  # one line
    assert encode_lines([(T, "system", "lone \ud800 surrogate", 1)]).count(b"\n") == 1  # not an exception


# -- the runner's framing of a pipe -------------------------------------------------------------

def reference(chunks: list[bytes], mask: Any = None, limit: int = 64) -> bytes:
    """Line by line, as the runner did before: split, cut, mask, encode per line."""
    out, held, dropped = [], b"", 0
    for n, chunk in enumerate(chunks):
        lines, held, dropped = split_lines(held, dropped, chunk, limit)
        out += [(T + n, "stdout", mask(ln) if mask else ln, 2) for ln in lines]
    if held or dropped:
        line = cut_line(held, len(held) + dropped, limit)
        out.append((T + len(chunks), "stdout", mask(line) if mask else line, 2))
    return encode_lines(out)


def framed(chunks: list[bytes], mask: Any = None, limit: int = 64) -> bytes:
    out = Output("stdout", 2, mask, limit)
    return b"".join([out.feed(c, T + n) for n, c in enumerate(chunks)] + [out.close(T + len(chunks))])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=150) | st.sampled_from([b"\n", b"a\nb\n", b"\xe2\x82", b"\xac\n", b'"\\',
                                                           "é\n".encode(), b"x" * 70 + b"\n", b"\x00\n"]),
                max_size=12))
def test_block_framing_equals_line_by_line(chunks: list[bytes]) -> None:
    assert framed(chunks) == reference(chunks)
    mask = masker(["secret", "é\né"])
    assert framed(chunks, mask) == reference(chunks, mask)


def test_block_framing_fast_path_and_masking() -> None:
    chunks = [b"one\ntw", b"o\n", "thr\u00e9e\n".encode(), b"x" * 200 + b"\nshort\n", b"bad \xff\n", b"tail"]
    data = framed(chunks, limit=64)
    assert data == reference(chunks, limit=64)
    cut = "x" * 64 + " … [line truncated: 200 bytes]"
    assert [e.message for e in entries(data)] == ["one", "two", "thr\u00e9e", cut, "short", "bad \ufffd", "tail"]
    masked = entries(framed([b"key=hunter22 and hunter22\n"], masker(["hunter22"])))
    assert [e.message for e in masked] == ["key=*** and ***"]


# -- the log store ------------------------------------------------------------------------------

async def collect(store: LogStore, job_id: str, done: Any, tail: int | None = None) -> list[bytes]:
    return [block async for block in store.follow(job_id, done, tail, poll=0.2)]


def numbered(n: int, start: int = 0) -> bytes:
    return encode_lines([(T, "stdout", f"line {i}", 1) for i in range(start, start + n)])


async def test_follow_yields_every_line_in_order_as_raw_blocks(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    ended = False
    follower = asyncio.ensure_future(collect(store, "job1", lambda: ended))
    total = 0
    for _ in range(30):  # blocks of whole lines, more than a READ_BLOCK in all
        store.append_bytes("job1", numbered(2000, total))
        total += 2000
        await asyncio.sleep(0)
    store.append("job1", [(T, "system", "the end", 1)])
    await asyncio.sleep(0.05)
    ended = True
    store.wake("job1")
    blocks = await asyncio.wait_for(follower, 10)
    data = b"".join(blocks)
    assert data == store.path("job1").read_bytes()
    assert all(b.endswith(b"\n") and len(b) <= READ_BLOCK for b in blocks)
    got = entries(data)
    assert [e.message for e in got] == [f"line {i}" for i in range(total)] + ["the end"]
    assert store.read("job1")[0] == got


async def test_fifty_followers_get_the_bytes_and_seldom_ask_for_the_state(tmp_path: Path) -> None:
    """Followers read blocks of the file (no parsing); the job's state is asked when a follower has
    caught up and it may have changed, not once per block; the end reaches them at once."""
    store = LogStore(tmp_path)
    ended, asked = False, 0

    async def done() -> bool:
        nonlocal asked
        asked += 1
        return ended

    followers = [asyncio.ensure_future(collect_slow(store, "many", done)) for _ in range(50)]
    for n in range(40):
        store.append_bytes("many", numbered(5000, n * 5000))  # ~0.3 MB each
        await asyncio.sleep(0.01)
    ended = True
    t = time.monotonic()
    store.wake("many")
    got = await asyncio.wait_for(asyncio.gather(*followers), 30)
    assert time.monotonic() - t < 2  # not the 5 s poll: the end woke them
    whole = store.path("many").read_bytes()
    assert all(b"".join(blocks) == whole for blocks in got)
    assert asked <= 50 * 3, asked  # at the start, at the end (and a spare): not per block or append
    assert not store._following and not store._changes  # nothing left behind per job
    assert not store._waiters  # not even the event a follower last waited on


async def collect_slow(store: LogStore, job_id: str, done: Any) -> list[bytes]:
    return [block async for block in store.follow(job_id, done, poll=5)]


async def test_follow_of_a_job_with_no_log_ends_with_the_job(tmp_path: Path) -> None:
    store = LogStore(tmp_path)

    async def done() -> bool:
        return True

    assert await asyncio.wait_for(collect(store, "none", done), 5) == []
    assert list(store.blocks("none")) == [] and store.read("none") == ([], 0)
    assert not store._waiters  # a follower that ended on its own left nothing per job (the soak grew by one each)


async def test_tail_reads_back_from_the_end(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.append_bytes("job2", numbered(50_000))  # several READ_BLOCKs
    for n in (0, 1, 7, 20_000, 50_000, 80_000):
        want = [f"line {i}" for i in range(max(0, 50_000 - n), 50_000)]
        assert [e.message for e in entries(b"".join(store.blocks("job2", n)))] == want
        assert [e.message for e in entries(b"".join(await collect(store, "job2", lambda: True, n)))] == want
    # --tail 0 on a job that has printed nothing yet: what it prints later is shown
    ended = False
    follower = asyncio.ensure_future(collect(store, "job3", lambda: ended, 0))
    await asyncio.sleep(0.05)
    store.append_bytes("job3", numbered(3))
    await asyncio.sleep(0.05)
    ended = True
    store.wake("job3")
    assert [e.message for e in entries(b"".join(await asyncio.wait_for(follower, 5)))] == ["line 0", "line 1",
                                                                                            "line 2"]


async def test_files_of_the_older_format_are_still_read_and_followed(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    path = store.path("old1")
    path.parent.mkdir()
    old = [(T + i, "stderr" if i % 2 else "stdout", m, 1) for i, m in enumerate(MESSAGES)]
    path.write_text("".join(json.dumps({"t": t, "s": s, "m": m, "a": a}, ensure_ascii=False) + "\n"
                            for t, s, m, a in old) + '{"t": 1.5, "s": "system", "m": "no attempt"}\n',
                    encoding="utf-8")
    store.append("old1", [(T, "stdout", "new format, appended after an upgrade", 2)])
    want = [*old, (1.5, "system", "no attempt", 1), (T, "stdout", "new format, appended after an upgrade", 2)]
    expect = encode_lines(want)
    assert b"".join(store.blocks("old1")) == expect
    assert b"".join(await collect(store, "old1", lambda: True)) == expect
    assert b"".join(store.blocks("old1", 2)) == encode_lines(want[-2:])
    assert store.read("old1")[0] == entries(expect)


# -- the dispatcher's bound ---------------------------------------------------------------------

BOUND = r"""
import os, uuid
import ray
ray.init(address=os.environ["SAGE_OPS_RAY__ADDRESS"], namespace="sgo-test-" + uuid.uuid4().hex,
         logging_level="ERROR", log_to_driver=False)
from sage_ops.server.backend.actor import LOG_HELD_MAX, Dispatcher, key_hash
key, cap = b"k" * 32, b"c" * 32
d = Dispatcher.options(name="bound").remote(key_hash(key))
epoch = ray.get(d.hello.remote(key))["epoch"]
never = {"cpu": 0, "gpu": 0, "custom_resources": {"sgo-test-never": 1}}  # dispatched, never runs
ray.get(d.submit.remote(key, [{"id": "job", "attempt": 1, "spec": {}, "opts": {}, "resources": never, "cap": cap}]))
blob = b"x" * (1 << 20)
n = LOG_HELD_MAX // len(blob)
refs = [d.logs.remote("job", 1, i, blob, cap) for i in range(n + 3)]
ready, waiting = ray.wait(refs, num_returns=n, timeout=60)
assert len(ready) == n, len(ready)
assert not ray.wait(waiting, timeout=1)[0]  # the bound is reached: the rest wait
reply = ray.get(d.poll.remote(key, epoch, 0, 0, 0))
assert len(reply["events"]) == n, len(reply["events"])
last = reply["events"][-1][0]
reply = ray.get(d.poll.remote(key, epoch, last, last, 5.0))  # acknowledged: room for the waiting three
assert len(ray.wait(waiting, num_returns=3, timeout=10)[0]) == 3
more = ray.get(d.poll.remote(key, epoch, last, last + len(reply["events"]), 0))["events"]
assert len(reply["events"]) + len(more) == 3
ray.kill(d)
print("ok")
"""


def test_dispatcher_holds_a_bounded_amount_of_log_data_then_makes_calls_wait(ray_head: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-c", BOUND], env={**os.environ, **ray_head}, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# -- end to end ---------------------------------------------------------------------------------

def test_a_job_printing_200k_lines_reaches_followers_whole_and_in_order(daemon: Daemon) -> None:
    n = 200_000
    job_id = daemon.submit_q("--", "python", "-c",
                             f"import sys\nfor i in range({n}): sys.stdout.write(f'n={{i}} ' + 'x' * 60 + '\\n')\n"
                             "print('to stderr', file=sys.stderr)")
    started = time.monotonic()
    with daemon.client(timeout=120) as client:
        got = [(e.stream, e.message) for e in client.stream_job_logs(job_id)]
        assert client.get_job_status(job_id) == "COMPLETED"
    assert time.monotonic() - started < 120
    out = [m for s, m in got if s == "stdout"]
    assert out == [f"n={i} " + "x" * 60 for i in range(n)]  # all of them, in order, once each
    assert ("stderr", "to stderr") in got
    cli = daemon.run("logs", "--no-timestamps", "--tail", "3", job_id, check=True).stdout.splitlines()
    assert cli == [("" if s == "stdout" else f"[{s}] ") + m for s, m in got[-3:]]
    lines = daemon.run("logs", "--json", job_id, check=True).stdout.splitlines()
    assert len(lines) == n + 1 and json.loads(lines[0])["message"] == "n=0 " + "x" * 60

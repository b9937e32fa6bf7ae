"""Abuse has limits, on the job side: a job's log stops at its quota with a marker (and the job runs
on), a reader never holds a line longer than LINE_MAX whatever the writer did, and the result file
is read without following links, from a regular file only, bounded. Each one failed on the code
before it. (That no tenant fills the global queue and that `--cpu 0` counts as MIN_CPU against
`--max-cpu` are scheduling rules: tests/test_scheduler_rules.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

from sage_ops.server.storage.job_output import MAX_LOG_LINE, TRUNCATED, Capture, Output, encode_lines, read_result
from sage_ops.server.storage.logs import LINE_MAX, LOG_SLACK, LogStore

CAP = 1024 * 1024  # storage.max_log_bytes of the test daemon
MARKER = TRUNCATED.format(CAP)


def lines_of(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


# -- the runner's capture --------------------------------------------------------------------

def test_capture_stops_at_its_quota_with_a_marker_and_counts_the_rest() -> None:
    capture, out = Capture(attempt=1, limit=64 * 1024), Output("stdout", 1)
    chunk = b"".join(b"line %06d\n" % i for i in range(5000))  # ~55 KiB of lines per read
    kept = b"".join(capture.feed(out, chunk, 1.0) for _ in range(20))
    assert len(kept) <= 64 * 1024 + 200
    assert lines_of(kept)[-1]["message"] == TRUNCATED.format(64 * 1024)
    assert capture.discarded >= 18 * len(chunk)
    assert "more bytes of output discarded" in lines_of(capture.summary(2.0))[0]["message"]


# -- the daemon's log store ------------------------------------------------------------------

def test_the_store_stops_a_log_at_quota_plus_slack_whatever_the_runner_sent(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    block = encode_lines([(1.0, "stdout", "y" * 1000, 1)] * 1000)  # ~1 MiB per block
    for _ in range(5):
        store.append_bytes("abcdef", block, cap=CAP)
    size = store.path("abcdef").stat().st_size
    assert size <= CAP + LOG_SLACK + 200
    entries, _ = store.read("abcdef")
    assert entries[-1].message == MARKER
    store.append_bytes("abcdef", block, cap=CAP)
    assert store.path("abcdef").stat().st_size == size  # nothing more, not even a second marker


HUGE = encode_lines([(2.0, "stderr", "z" * 5_000_000, 3)])


def blob_log(store: LogStore, job_id: str) -> Path:
    """A log a hostile writer made: a line, a 5 MB entry, 5 MB of non-JSON, a line, and a
    newline-free 5 MB blob still being written."""
    path = store.path(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_lines([(1.0, "stdout", "first", 1)]) + HUGE + b"q" * 5_000_000 + b"\n"
                     + encode_lines([(3.0, "stdout", "last", 1)]) + b"w" * 5_000_000)
    return path


def test_read_cuts_a_huge_line_to_line_max_keeping_its_entry(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    blob_log(store, "blob01")
    entries, _ = store.read("blob01")
    assert [e.message[:5] for e in entries] == ["first", "zzzzz", "[sage", "last"]
    assert max(len(e.message.encode()) for e in entries) <= LINE_MAX
    assert (entries[1].stream, entries[1].attempt) == ("stderr", 3)
    assert entries[1].message.endswith(f"[line cut at read: {len(HUGE) - 1} bytes]")


def test_a_follower_never_gets_a_line_longer_than_line_max(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    blob_log(store, "blob02")

    async def follow() -> list[bytes]:
        return [block async for block in store.follow("blob02", lambda: True)]

    blocks = asyncio.run(follow())
    assert max(len(line) for b in blocks for line in b.split(b"\n")) <= LINE_MAX
    assert lines_of(b"".join(blocks))[-1]["message"] == "last"  # the unfinished blob is not served


def test_a_follower_gets_a_line_as_long_as_the_log_keeps_whole(tmp_path: Path) -> None:
    """A follower reads in blocks smaller than a megabyte; a kept line of the longest size still
    comes whole, in one block, with the lines around it."""
    store = LogStore(tmp_path)
    longest = "x" * MAX_LOG_LINE
    store.append_bytes("long01", encode_lines([(1.0, "stdout", "before", 1), (2.0, "stdout", longest, 1),
                                               (3.0, "stdout", "after", 1)]))

    async def follow() -> list[bytes]:
        return [block async for block in store.follow("long01", lambda: True)]

    blocks = asyncio.run(follow())
    assert [line["message"] for line in lines_of(b"".join(blocks))] == ["before", longest, "after"]


# -- the result file -------------------------------------------------------------------------

def test_a_fifo_as_result_file_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "result.json")
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(read_result(str(tmp_path), "result.json")), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert got == [(None, "result file ignored: not a regular file")]


def test_a_symlinked_result_file_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text('{"secret": 1}')
    (tmp_path / "result.json").symlink_to(tmp_path / "secret.json")
    raw, why = read_result(str(tmp_path), "result.json")
    assert raw is None and why is not None and "link" in why


def test_a_result_file_over_the_limit_is_ignored_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text(json.dumps("x" * 5000))
    assert read_result(str(tmp_path), "result.json", limit=4096) == (
        None, "result file ignored: 5002 bytes, more than storage.max_result_bytes (4096)")


# -- with a real daemon ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def limited(ray_head: dict[str, str]) -> Any:
    d = Daemon(ray_head, {"jobmanager": {"max_jobs": 30}, "storage": {"max_log_bytes": CAP}})
    d.start()
    try:
        yield d
    finally:
        d.cleanup()


FLOOD = ("import sys\nsys.stdout.write('x' * 5_000_000)\nprint()\n"
         "for i in range(400_000):\n    print('line', i)\n"
         "from sage_ops.job import set_result\nset_result({'ran': 'on'})\n")


def test_a_job_past_its_log_quota_runs_on_and_its_log_ends_with_the_marker(limited: Daemon) -> None:
    script = limited.home / "flood.py"
    script.write_text(FLOOD)
    view = limited.client().wait(limited.submit_q(str(script)), timeout=120)
    assert view.status == "COMPLETED"
    assert limited.client().get_job_result(view.id) == {"ran": "on"}  # it ran on to its end
    log = limited.state / "storage" / "logs" / view.id[:2] / f"{view.id}.log"
    assert log.stat().st_size <= CAP + LOG_SLACK
    last = lines_of(log.read_bytes())[-1]["message"]
    assert last.startswith(MARKER[:-1]) and "more bytes of output discarded" in last
    first = next(limited.client().stream_job_logs(view.id, follow=False))
    assert len(first.message.encode()) <= MAX_LOG_LINE + 64  # the blob was cut on the runner


@pytest.mark.parametrize("plant", ['mkfifo "$SAGE_OPS_RESULT_FILE"', 'ln -s "$SECRET" "$SAGE_OPS_RESULT_FILE"'])
def test_a_planted_result_file_neither_blocks_nor_leaks(limited: Daemon, plant: str) -> None:
    secret = limited.home / "secret.json"
    secret.write_text('{"secret": "daemon-only"}')
    jid = limited.submit_q("--timeout", "600", "--env", f"SECRET={secret}", "--", "sh", "-c", plant)
    view = limited.client().wait(jid, timeout=60)
    assert view.status == "COMPLETED"
    assert limited.client().get_job_result(jid) is None

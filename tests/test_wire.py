"""sage_ops/wire.py, the stdlib HTTP client under the CLI and the sync Python client: keep-alive
across the daemon's idle timeout, streamed lines whatever the chunking, the query string, and a
daemon that is not there."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Daemon

from sage_ops.errors import DaemonUnavailable, NotFound
from sage_ops.wire import WireClient, job_path, lines, query


def test_a_kept_alive_connection_the_daemon_closed_is_replaced(daemon: Daemon) -> None:
    w = WireClient(f"unix://{daemon.socket}")
    assert w.call("GET", "/v1/health")["status"] == "ok"
    time.sleep(6)  # past uvicorn's 5 s keep-alive: the daemon has closed the idle connection
    assert w.call("GET", "/v1/health")["status"] == "ok"


def test_the_same_connection_serves_request_after_request(daemon: Daemon) -> None:
    w = WireClient(f"unix://{daemon.socket}")
    for _ in range(3):
        w.call("GET", "/v1/health")
    assert len(w._idle[0]) == 1


def test_the_daemons_error_comes_back_as_its_exception(daemon: Daemon) -> None:
    with pytest.raises(NotFound, match="no such job: nope"):
        WireClient(f"unix://{daemon.socket}").call("GET", job_path("nope"))


def test_a_streamed_log_arrives_line_by_line(daemon: Daemon) -> None:
    job = daemon.submit_q("--", "sh", "-c", "echo one; echo two")
    daemon.run("wait", job, check=True)
    got = list(WireClient(f"unix://{daemon.socket}").stream(job_path(job, "/logs"), {"follow": False}))
    assert [line.split(b'"message":"')[1][:3] for line in got] == [b"one", b"two"]


def test_no_daemon_is_daemon_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnavailable, match="cannot reach the sage-ops daemon"):
        WireClient(f"unix://{tmp_path}/none.sock").call("GET", "/v1/health")


def test_lines_are_whole_whatever_the_chunks() -> None:
    assert list(lines(iter([b'{"a"', b':1}\n{"b":2}\n\n{"c"', b":3}"]))) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_the_query_repeats_lists_and_spells_booleans_in_lower_case() -> None:
    assert query({"status": ["A", "B"], "follow": True, "tail": None}) == "?status=A&status=B&follow=true"

"""Where jobs' files live (storage.url): a file:// store and a real S3-compatible server (moto's,
on loopback), logs uploaded in blocks and read back by a daemon that never wrote them, and a
standby that takes over from a killed leader serving its logs with no shared filesystem."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, wait_until
from test_failover import free_port

from sage_ops.client import JobManagerClient
from sage_ops.config import StorageConfig
from sage_ops.server.storage.blobs import BlobStore, StorageError
from sage_ops.server.storage.logs import LOG_SLACK, LogStore
from sage_ops.storage_url import check_url, private_paths

S3_ENV = {"AWS_ACCESS_KEY_ID": "sgo-test", "AWS_SECRET_ACCESS_KEY": "sgo-test-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """A real S3 API (moto's server mode) on a loopback port, with one bucket; yields what a
    daemon's config and environment need to use it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    before = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import fsspec

        fs = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
        fs.mkdir("sgo-bucket")
        yield {"url": "s3://sgo-bucket/sage-ops", "options": {"endpoint_url": endpoint}, "env": S3_ENV}
    finally:
        server.stop()
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def lines_of(store: LogStore, job_id: str) -> list[str]:
    return [e.message for e in store.read(job_id)[0]]


# -- the URL and the config --------------------------------------------------------------------
def test_a_url_with_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="no credentials in storage.url"):
        check_url("s3://AKIA:secret@bucket/prefix")


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown storage scheme"):
        check_url("nosuch://bucket/prefix")


def test_a_relative_file_url_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        check_url("file://relative/dir")


def test_credentials_in_storage_options_are_refused() -> None:
    with pytest.raises(ValueError, match="no credentials in the config file"):
        StorageConfig(url="s3://b/p", options={"secret": "x"})


def test_a_typed_store_needs_its_url() -> None:
    with pytest.raises(ValueError, match="storage.type s3 needs storage.url"):
        StorageConfig(type="s3")


def test_a_missing_bucket_is_one_line(s3: dict[str, Any]) -> None:
    store = BlobStore("s3://no-such-bucket/x", s3["options"])
    with pytest.raises(StorageError, match=r"^storage.url s3://no-such-bucket/x: \w+"):
        store.check()


# -- the store ---------------------------------------------------------------------------------
@pytest.fixture(params=["file", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return BlobStore(f"file://{tmp_path}/blobs")
    s3 = request.getfixturevalue("s3")
    return BlobStore(f"{s3['url']}/{tmp_path.name}", s3["options"])


def test_a_stored_object_reads_back(blobs: BlobStore) -> None:
    blobs.put("packages/abc.tar.gz", b"data")
    assert blobs.get("packages/abc.tar.gz") == b"data"


def test_keys_are_listed_in_order_under_a_prefix(blobs: BlobStore) -> None:
    for key in ("logs/ab/J/2", "logs/ab/J/1", "logs/ab/K/1"):
        blobs.put(key, b"x")
    assert blobs.keys("logs/ab/J") == ["logs/ab/J/1", "logs/ab/J/2"]


def test_a_deleted_key_is_gone(blobs: BlobStore) -> None:
    blobs.put("a/b", b"x")
    blobs.delete(["a/b", "a/never"])
    assert not blobs.exists("a/b")


def test_a_missing_key_is_file_not_found(blobs: BlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        blobs.get("nothing/here")


def test_a_key_that_climbs_out_is_refused(blobs: BlobStore) -> None:
    with pytest.raises(ValueError, match="bad storage key"):
        blobs.put("../outside", b"x")


# -- logs through the store ----------------------------------------------------------------------
def test_another_daemon_reads_the_uploaded_log(blobs: BlobStore, tmp_path: Path) -> None:
    writer = LogStore(tmp_path / "a", blobs)
    writer.append("J1", [(1.0, "stdout", f"line {i}", 1) for i in range(3)])
    writer.flush()
    assert lines_of(LogStore(tmp_path / "b", blobs), "J1") == ["line 0", "line 1", "line 2"]


def test_a_log_continued_elsewhere_keeps_every_line_once(blobs: BlobStore, tmp_path: Path) -> None:
    first = LogStore(tmp_path / "a", blobs)
    first.append("J2", [(1.0, "stdout", "before", 1)])
    first.flush()
    second = LogStore(tmp_path / "b", blobs)  # the new leader
    second.append("J2", [(2.0, "stdout", "after", 2)])
    second.flush()
    assert lines_of(LogStore(tmp_path / "c", blobs), "J2") == ["before", "after"]


def test_a_standby_reads_what_the_leader_uploads_later(blobs: BlobStore, tmp_path: Path) -> None:
    leader, standby = LogStore(tmp_path / "a", blobs), LogStore(tmp_path / "b", blobs)
    standby.lead(False)
    leader.append("J3", [(1.0, "stdout", "one", 1)])
    leader.flush()
    lines_of(standby, "J3")
    leader.append("J3", [(2.0, "stdout", "two", 1)])
    leader.flush()
    assert lines_of(standby, "J3") == ["one", "two"]


def test_the_quota_holds_after_a_failover(blobs: BlobStore, tmp_path: Path) -> None:
    cap = 64 * 1024
    big = "x" * 60_000
    first = LogStore(tmp_path / "a", blobs)
    first.append("J4", [(1.0, "stdout", big, 1)] * 2, cap)
    first.flush()
    second = LogStore(tmp_path / "b", blobs)
    second.append("J4", [(2.0, "stdout", big, 2)] * 4, cap)
    second.flush()
    stored = sum(len(blobs.get(k)) for k in blobs.keys("logs/J4/J4"))
    assert stored <= cap + LOG_SLACK + 4096


def test_a_removed_log_is_gone_from_the_store(blobs: BlobStore, tmp_path: Path) -> None:
    logs = LogStore(tmp_path / "a", blobs)
    logs.append("J5", [(1.0, "stdout", "x", 1)])
    logs.flush()
    logs.remove(["J5"])
    assert blobs.keys("logs/J5/J5") == []


# -- daemons -----------------------------------------------------------------------------------
def s3_daemon(new_daemon: Any, s3: dict[str, Any], extra: dict[str, Any] | None = None) -> Daemon:
    d: Daemon = new_daemon({"storage": {"url": s3["url"], "options": s3["options"], "flush_interval": 0.2},
                            **(extra or {})})
    d.env.update(s3["env"])
    return d


def test_a_store_the_daemon_cannot_use_stops_it_in_one_line(new_daemon: Any, s3: dict[str, Any]) -> None:
    d = s3_daemon(new_daemon, {**s3, "url": "s3://no-such-bucket/p"})
    out = d.run("daemon", "start", timeout=120)
    assert "storage.url s3://no-such-bucket/p:" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_standby_serves_the_logs_of_a_killed_leader(new_daemon: Any, postgres: Any, s3: dict[str, Any],
                                                      tmp_path: Path) -> None:
    url = postgres()
    made = []
    for name in ("a", "b"):  # each its own disk: nothing shared but the database and the store
        made.append(s3_daemon(new_daemon, s3, {
            "database": {"url": url}, "security": {"secret_key_file": f"{tmp_path}/secret.key"},
            "jobmanager": {"host": "127.0.0.1", "port": free_port(), "heartbeat_interval": 2},
            "storage": {"url": s3["url"] + "/failover", "options": s3["options"], "flush_interval": 0.2,
                        "path": str(tmp_path / name), "inline_result_bytes": 1024}}))
    a, b = made
    a.start()
    b.start()
    client = a.client()
    big = "r" * 5000  # over the inline limit: kept in the store
    job = client.submit_job({"command": ["sh", "-c", f'for i in 1 2 3; do echo line $i; done; '
                                         f'echo \'"{big}"\' > "$SAGE_OPS_RESULT_FILE"'], "resources": {"cpu": 0}})
    assert client.wait(job.id, 60).status == "COMPLETED"
    store = BlobStore(s3["url"] + "/failover", s3["options"])
    wait_until(lambda: b"line 3" in b"".join(store.get(k) for k in store.keys(f"logs/{job.id[:2]}/{job.id}")))
    os.kill(int((a.state / "daemon.pid").read_text()), signal.SIGKILL)
    wait_until(lambda: b.client(retry_attempts=1, timeout=5).health_check().role == "leader", timeout=40)
    token = (a.home / "config" / "sage-ops" / "token").read_text().strip()
    standby = JobManagerClient(f"tcp://{b.client().health_check().tcp}", token=token)
    assert [e.message for e in standby.get_job_logs(job.id) if e.stream == "stdout"] == ["line 1", "line 2", "line 3"]
    health = standby.health_check().storage
    assert (health["shared"], health["url"], health["error"]) == (True, s3["url"] + "/failover", None)
    assert standby.get_job_result(job.id) == big


def test_a_jobs_sandbox_hides_the_stores_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".aws").mkdir()
    assert tmp_path / ".aws" in private_paths("s3://bucket/p")


def test_a_jobs_sandbox_hides_a_file_store(tmp_path: Path) -> None:
    assert tmp_path in private_paths(f"file://{tmp_path}")


def test_a_large_result_is_kept_in_the_store_not_the_row(new_daemon: Any) -> None:
    d: Daemon = new_daemon({"storage": {"inline_result_bytes": 1024}})
    d.start()
    big = {"values": list(range(2000))}
    job = d.client().submit_job({"command": ["sh", "-c", f"echo '{json.dumps(big)}' > \"$SAGE_OPS_RESULT_FILE\""],
                                 "resources": {"cpu": 0}})
    d.client().wait(job.id, 60)
    assert d.client().get_job_result(job.id) == big
    assert (d.state / "storage" / "blobs" / "results" / job.id[:2] / f"{job.id}.json").exists()


def test_health_says_a_store_of_this_machine_only(new_daemon: Any) -> None:
    d: Daemon = new_daemon()
    d.start()
    assert "(this machine only: no storage.url)" in d.run("health", check=True).stdout


def test_a_first_attempts_log_is_not_looked_up_in_the_store(tmp_path: Path) -> None:
    class Counting(BlobStore):
        listed = 0

        def keys(self, prefix: str) -> list[str]:
            Counting.listed += 1
            return super().keys(prefix)

    logs = LogStore(tmp_path / "a", Counting(f"file://{tmp_path}/blobs"))
    logs.fresh("J6")
    logs.append("J6", [(1.0, "stdout", "x", 1)])
    assert Counting.listed == 0


def test_a_missing_backend_package_is_named() -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is not None:
        pytest.skip("pyarrow is installed here: hdfs:// would look for a namenode")
    with pytest.raises(StorageError, match=r"hdfs:// needs pyarrow \(pip install 'sage-ops\[hdfs\]'\)"):
        BlobStore("hdfs://namenode:8020/sage-ops")


def test_a_store_that_fails_keeps_the_lines_for_the_next_flush(tmp_path: Path) -> None:
    class Down(BlobStore):
        down = True

        def put_many(self, items: Any) -> None:
            if Down.down:
                raise OSError("store down")
            super().put_many(items)

    store = Down(f"file://{tmp_path}/blobs")
    logs = LogStore(tmp_path / "a", store)
    logs.fresh("J7")
    logs.append("J7", [(1.0, "stdout", "kept", 1)])
    logs.flush()
    failing = (logs.last_error, logs.backlog())
    Down.down = False
    logs.flush()
    assert (failing, logs.last_error, lines_of(LogStore(tmp_path / "b", store), "J7")) == \
        (("OSError: store down", 1), None, ["kept"])


def test_a_listing_shows_what_another_daemon_wrote_since(s3: dict[str, Any], tmp_path: Path) -> None:
    url = f"{s3['url']}/{tmp_path.name}"
    mine = BlobStore(url, s3["options"])
    theirs = BlobStore(url, {**s3["options"], "skip_instance_cache": True})  # another process's client
    mine.put("logs/ab/J8/0-1", b"x")
    mine.keys("logs/ab/J8")
    theirs.put("logs/ab/J8/1-2", b"y")
    assert mine.keys("logs/ab/J8") == ["logs/ab/J8/0-1", "logs/ab/J8/1-2"]

"""Pipeline jobs: the compiler, the in-process executor, and real pipeline jobs on Ray through the daemon."""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import pid_alive, wait_until
from pydantic import ValidationError

from sage_ops.errors import Invalid
from sage_ops.pipeline import (
    FileSink,
    FileSource,
    LocalEnvironment,
    MapFunction,
    OperatorFailed,
    PipelineFailed,
    RemoteEnvironment,
    SinkFunction,
)
from sage_ops.pipeline.local import Cancelled
from sage_ops.pipeline.partitioning import stable_hash
from sage_ops.pipeline.shapes import PipelinePlan, PipelineSpec

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "λ", "naïve"]


class Tokenize(MapFunction):
    def map(self, line: str) -> list[str]:
        return line.split()


class WhoAmI(MapFunction):
    """Tags a record with the instance and process that handled it."""

    def open(self, ctx: Any) -> None:
        self.tag = (ctx.index, os.getpid())

    def map(self, _value: Any) -> tuple[int, int]:
        return self.tag


class PidSink(SinkFunction):
    """Writes its process id at open, then counts: a streaming test can see its actor die."""

    def __init__(self, path: str) -> None:
        self.path = path

    def open(self, ctx: Any) -> None:
        Path(self.path).write_text(str(os.getpid()))

    def invoke(self, value: Any) -> None:
        pass


def word_count(env: Any, source: str, out: str, tags: str) -> None:
    tokens = env.source(FileSource, path=source).map(Tokenize, parallelism=4)
    tokens.map(WhoAmI, parallelism=4).sink(FileSink, path=tags)  # a 2nd consumer: 4 instances, forward
    (tokens.filter(lambda t: t)
        .flatmap(lambda t: t)
        .map(lambda w: (w, 1))
        .key_by(lambda kv: kv[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]), parallelism=2)
        .sink(FileSink, path=out, parallelism=2))


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rnd = random.Random(9)
    path = tmp_path_factory.mktemp("wc") / "input.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(30_000):
            f.write(" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 7))) + "\n")
    return path


def expected(path: Path) -> dict[str, int]:
    return dict(collections.Counter(w for line in path.read_text(encoding="utf-8").splitlines() for w in line.split()))


def parts(out: Path, n: int) -> list[list[tuple[str, int]]]:
    """The sink's part files (instance i of n writes out-i.jsonl), one list of records each."""
    files = [Path(FileSink.part(str(out), i, n)) for i in range(n)]
    return [[tuple(json.loads(line)) for line in f.read_text(encoding="utf-8").splitlines()] for f in files]


def final_counts(rows: list[list[tuple[str, int]]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for part in rows:
        for word, n in part:  # a running aggregate: the last value of a key is its count
            counts[word] = n
    return counts


# -- the compiler ------------------------------------------------------------------------------
def test_chaining_fuses_forward_operators_of_equal_parallelism() -> None:
    env = LocalEnvironment("plan")
    (env.from_collection(range(10)).map(lambda x: x).filter(lambda x: x)
        .map(lambda x: x, parallelism=2, name="Wide").key_by(lambda x: x % 3).reduce(lambda a, b: a + b,
                                                                                    parallelism=2)
        .sink(print, parallelism=2))
    plan = env.plan()
    assert [t.name for t in plan.tasks] == ["Source: CollectionSource -> Map: lambda -> Filter: lambda",
                                            "Wide", "Reduce: lambda -> Sink: print"]
    assert [(e.source, e.target, e.partitioning.value) for e in plan.edges] == [(0, 1, "round_robin"), (1, 2, "hash")]
    assert plan.actors() == 5
    unchained = LocalEnvironment("plan", chaining=False)
    unchained.from_collection([1]).map(str).filter(bool).sink(print)
    assert len(unchained.plan().tasks) == 4


def test_a_plan_the_daemon_cannot_trust_is_refused() -> None:
    env = LocalEnvironment("plan")
    env.from_collection([1]).map(str).sink(print)
    plan = env.plan().model_dump()
    plan["operators"][1]["task"] = 7  # names a task that does not exist
    with pytest.raises(ValidationError, match="task 7"):
        PipelinePlan.model_validate(plan)
    with pytest.raises(ValidationError, match="not base64"):
        PipelineSpec(payload="not base64!", python="3.11", plan=env.plan())


def test_bad_pipelines_fail_where_they_are_written() -> None:
    env = LocalEnvironment("bad")
    with pytest.raises(TypeError, match="not a class"):
        env.from_collection([1]).map(len, 3)
    with pytest.raises(ValueError, match="parallelism"):
        env.from_collection([1]).map(len, parallelism=0)
    with pytest.raises(TypeError, match="SourceFunction"):
        env.source(print)
    with pytest.raises(ValueError, match="no sink"):
        env.plan()


def test_keys_hash_alike_in_every_process() -> None:
    keys = ["alpha", "naïve", 42, -7, ("a", 1), b"raw", 2.5, None]
    code = ("import json; from sage_ops.pipeline.partitioning import stable_hash;"
            f"print(json.dumps([stable_hash(k) for k in {keys!r}]))")
    seen = {json.dumps([stable_hash(k) for k in keys])}
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                             capture_output=True, text=True, check=True)
        seen.add(out.stdout.strip())
    assert len(seen) == 1


# -- in this process ---------------------------------------------------------------------------
def test_local_word_count_equals_a_plain_count(text: Path, tmp_path: Path) -> None:
    env = LocalEnvironment("wc")
    word_count(env, str(text), str(tmp_path / "out.jsonl"), str(tmp_path / "tags.jsonl"))
    view = env.execute(timeout=120)
    rows = parts(tmp_path / "out.jsonl", 2)
    assert final_counts(rows) == expected(text)
    assert not {w for w, _ in rows[0]} & {w for w, _ in rows[1]}  # a key lives on one instance
    sink = view.plan.operators[-1]
    assert view.metrics_of(sink.id).records_in == sum(expected(text).values())


def test_local_error_names_the_operator() -> None:
    env = LocalEnvironment("err")
    env.from_collection(range(100)).map(lambda x: 1 // (x - 50), name="Divide").sink(lambda _x: None)
    with pytest.raises(OperatorFailed, match="'Divide' \\(instance 1/1\\) failed: ZeroDivisionError") as err:
        env.execute(timeout=60)
    assert "Traceback" in str(err.value) and "runtime.py" not in str(err.value)


def test_local_stream_runs_until_cancelled() -> None:
    seen: list[int] = []
    env = LocalEnvironment("stream", linger_ms=10)

    def forever() -> Any:
        for i in itertools.count():
            yield i
            time.sleep(0.001)

    env.from_generator(forever).filter(lambda x: x % 2 == 0).sink(seen.append)
    job = env.submit()
    wait_until(lambda: len(seen) > 20)
    env.cancel(job)
    with pytest.raises(Cancelled):
        env.wait_for_completion(job, timeout=30)
    assert seen[:5] == [0, 2, 4, 6, 8]


def test_a_file_split_over_instances_reads_each_line_once(tmp_path: Path) -> None:
    src = tmp_path / "lines.txt"
    src.write_text("".join(f"line {i}{'x' * (i % 37)}\n" for i in range(5000)), encoding="utf-8")
    got: list[str] = []
    lock = threading.Lock()

    def keep(line: str) -> None:
        with lock:
            got.append(line)

    env = LocalEnvironment("split")
    env.source(FileSource, path=src, parallelism=3).sink(keep, parallelism=3)
    env.execute(timeout=60)
    assert sorted(got) == sorted(src.read_text(encoding="utf-8").splitlines())


# -- as jobs on Ray ----------------------------------------------------------------------------
def remote(daemon: Any, name: str, **kw: Any) -> RemoteEnvironment:
    return RemoteEnvironment(name, f"unix://{daemon.socket}", **kw)


def test_word_count_on_ray_equals_local_and_plain_python(daemon: Any, text: Path, tmp_path: Path) -> None:
    env = remote(daemon, "wordcount")
    word_count(env, str(text), str(tmp_path / "out.jsonl"), str(tmp_path / "tags.jsonl"))
    job_id = env.submit(priority=3)
    job = env.wait_for_completion(job_id, timeout=240)
    assert job.status.value == "COMPLETED"
    rows = parts(tmp_path / "out.jsonl", 2)
    assert final_counts(rows) == expected(text)
    assert not {w for w, _ in rows[0]} & {w for w, _ in rows[1]}  # key_by: equal keys, one instance

    local = LocalEnvironment("wordcount")
    word_count(local, str(text), str(tmp_path / "local.jsonl"), str(tmp_path / "local-tags.jsonl"))
    local.execute(timeout=120)
    assert sorted(sum(parts(tmp_path / "local.jsonl", 2), [])) == sorted(sum(rows, []))

    tags = {tuple(json.loads(line)) for line in (tmp_path / "tags.jsonl").read_text().splitlines()}
    assert {index for index, _ in tags} == {0, 1, 2, 3}
    assert len({pid for _, pid in tags}) == 4  # parallelism 4: four actors, four processes

    view = daemon.client().get_job(job_id)
    metrics = {m.id: m for m in view.pipeline.metrics}
    names = {o.name: o.id for o in view.pipeline.plan.operators}
    assert metrics[names["Reduce: lambda"]].records_in == sum(expected(text).values())
    assert view.spec.pipeline.payload is None and view.spec.pipeline.payload_bytes > 0  # code is not shown
    graph = daemon.run("graph", job_id, check=True).stdout
    assert "Filter: lambda -> FlatMap: lambda -> Map: lambda" in graph  # chained into one task
    assert "hash" in graph


def test_an_operator_exception_fails_the_job_with_its_name(daemon: Any) -> None:
    env = remote(daemon, "explode")

    def explode(x: int) -> int:
        if x == 777:
            raise ZeroDivisionError("bad record 777")
        return x

    env.from_collection(range(3000)).map(explode, name="Explode", parallelism=2).sink(lambda _x: None)
    job_id = env.submit()
    with pytest.raises(PipelineFailed) as err:
        env.wait_for_completion(job_id, timeout=240)
    job = err.value.job
    assert job.status.value == "FAILED"
    assert "operator 'Explode'" in job.reason and "ZeroDivisionError: bad record 777" in job.reason
    assert "Traceback" in job.reason and "in explode" in job.reason
    logs = daemon.run("logs", job_id, check=True).stdout
    assert "bad record 777" in logs


def test_a_streaming_job_runs_until_cancelled_and_its_actors_stop(daemon: Any, tmp_path: Path) -> None:
    env = remote(daemon, "stream", linger_ms=20)

    def ticks() -> Any:
        for i in itertools.count():
            yield i
            time.sleep(0.002)

    pid_file = tmp_path / "sink.pid"
    out = tmp_path / "stream.jsonl"
    stream = env.from_generator(ticks).map(lambda x: x * 2)
    stream.sink(FileSink, path=out)
    stream.rebalance().sink(PidSink, str(pid_file))  # a task of its own: an actor fed over the wire
    job_id = env.submit()
    client = daemon.client()
    wait_until(lambda: out.exists() and out.stat().st_size > 0, timeout=120)
    sink_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=60))

    def records() -> int:
        p = client.get_job(job_id).pipeline
        return p.metrics_of(p.plan.operators[-1].id).records_in if p else 0

    wait_until(lambda: records() > 0, timeout=60)  # live metrics while it runs
    assert client.get_job_status(job_id) == "RUNNING"
    client.cancel_job(job_id)
    job = client.wait(job_id, 60)
    assert job.status.value == "CANCELLED"
    lines = out.read_text().splitlines()
    assert [json.loads(x) for x in lines[:3]] == [0, 2, 4]
    wait_until(lambda: not pid_alive(sink_pid), timeout=60)


def test_a_pipeline_spec_without_its_code_is_refused(daemon: Any) -> None:
    env = LocalEnvironment("nocode")
    env.from_collection([1]).sink(print)
    spec = {"kind": "pipeline", "pipeline": {"python": "3.11", "plan": env.plan().model_dump(mode="json")}}
    with pytest.raises(Invalid, match="needs its payload"):
        daemon.client().submit_job(spec)
    assert daemon.client().list_jobs(name="nocode") == []  # nothing was stored


def test_a_shipped_workdirs_module_imports_in_every_operator(daemon: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "shipped_helper.py").write_text("def shout(x):\n    return str(x).upper()\n")
    out = tmp_path / "out.txt"
    env = remote(daemon, "shipped-modules")

    def shout(x: str) -> list[str]:
        import importlib
        import os

        # only in the shipped directory (made by this test): not on the submitter's sys.path
        shipped_helper = importlib.import_module("shipped_helper")

        # where it was found: Ray's copy on the actor's node, not the job's own directory (the
        # actor's directory here, which exists on the driver's node only)
        here = os.path.realpath(os.path.dirname(shipped_helper.__file__)) != os.path.realpath(os.getcwd())
        return [shipped_helper.shout(x), f"copy:{here}"]

    env.from_collection(["a", "b"]).map(shout, parallelism=2).sink(FileSink, path=str(out))
    job = env.wait_for_completion(env.submit(workdir=str(src)), timeout=240)
    got = sorted(tuple(json.loads(x)) for x in out.read_text().splitlines())
    assert (job.status.value, got) == ("COMPLETED", [("A", "copy:True"), ("B", "copy:True")])

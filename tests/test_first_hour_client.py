"""What a new user of the Python client met first (issue 22): the client and the CLI agree on
where a job runs and say so when a node lacks that directory, a pipeline's relative paths are
the submitter's, and a second server is one line, from a script as from the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

from sage_ops import FileSink, FileSource, JobStatus, RemoteEnvironment
from sage_ops.pipeline import PipelineFailed, SourceFunction

READ_INPUT = "import sys\nprint(open(sys.argv[sys.argv.index('--input') + 1]).read())\n"


# -- where a job runs ------------------------------------------------------------------------
def test_the_client_and_the_cli_run_a_job_in_the_same_place(daemon: Daemon, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_analysis.py").write_text(READ_INPUT)
    monkeypatch.chdir(tmp_path)
    client = daemon.client()
    from_python = client.submit_script("my_analysis.py", args=["--input", "data.csv"])
    from_cli = daemon.run("submit", "-q", "my_analysis.py", "--", "--input", "data.csv", cwd=tmp_path,
                          check=True).stdout.strip()
    assert client.get_job(from_python).spec.working_dir == client.get_job(from_cli).spec.working_dir == str(tmp_path)


def test_a_node_without_the_callers_directory_says_what_it_did(daemon: Daemon, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    client = daemon.client()
    gate = tmp_path / "gate"
    first = client.submit_command(["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done"])
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_analysis.py").write_text(READ_INPUT)
    (project / "data.csv").write_text("a,1\n")
    monkeypatch.chdir(project)
    job_id = client.submit_script("my_analysis.py", args=["--input", "data.csv"], dependencies=[first])
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(project)  # where it runs, that directory is not there
    gate.touch()
    job = client.wait(job_id, timeout=120)
    said = f"working_dir {project} does not exist on"
    assert job.status is JobStatus.FAILED  # data.csv is not where it ran
    assert said in (job.reason or "")
    assert any(said in entry.message for entry in client.get_job_logs(job_id))


# -- a pipeline's paths ----------------------------------------------------------------------
class Lines(SourceFunction):
    """A source of the user's own that names its path parameter, as FileSource does."""

    path_params = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def run(self) -> Iterator[str]:
        with open(self.where) as f:
            yield from f


SOURCES: dict[str, Callable[[RemoteEnvironment], Any]] = {
    "class and keyword": lambda env: env.source(FileSource, path="missing.csv"),
    "read_text": lambda env: env.read_text("missing.csv"),
    "instance": lambda env: env.source(FileSource("missing.csv")),
    "a class of the user's own": lambda env: env.source(Lines, "missing.csv"),
}


@pytest.mark.parametrize("source", SOURCES.values(), ids=SOURCES.keys())
def test_a_pipelines_relative_paths_are_the_submitters(daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        source: Callable[[RemoteEnvironment], Any]) -> None:
    monkeypatch.chdir(tmp_path)
    env = RemoteEnvironment("paths", jobmanager_address=f"unix://{daemon.socket}")
    source(env).sink(FileSink, path="out.json")
    with pytest.raises(PipelineFailed) as err:
        env.wait_for_completion(env.submit(), timeout=120)
    assert f"No such file or directory: '{tmp_path / 'missing.csv'}'" in str(err.value)


def test_a_pipeline_writes_under_its_environments_working_dir(daemon: Daemon, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.csv").write_text("a\nb\n")
    env = RemoteEnvironment("paths", jobmanager_address=f"unix://{daemon.socket}", working_dir="data")
    env.source(FileSource, path="input.csv").sink(FileSink, path="out/output.json")
    env.wait_for_completion(env.submit(), timeout=120)
    assert (tmp_path / "data" / "out" / "output.json").read_text().split() == ['"a"', '"b"']


# -- a second server -------------------------------------------------------------------------
SERVE = ('from sage_ops import JobManagerServer\n'
         'server = JobManagerServer(host="0.0.0.0", port=19001, ray_address="auto")\n'
         'server.start()\n')


def test_a_second_server_from_a_script_is_one_line(daemon: Daemon) -> None:
    out = subprocess.run([sys.executable, "-c", SERVE], env=daemon.env, cwd=daemon.home, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1, out.stderr  # no traceback, no Ray warning
    assert out.stderr.startswith("sage-ops daemon: a daemon is already running (pid ")


def test_a_second_foreground_daemon_is_one_line(daemon: Daemon) -> None:
    out = daemon.run("daemon", "start", "--foreground")
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("sage-ops daemon: a daemon is already running (pid ")

"""Issue 22, "mistakes surface late or mislead": a mistake is caught at submit (a missing or
directory script, a missing working dir); one rule for sizes (`--memory 512` is MiB, as Slurm's
--mem) and durations (`1h` wherever seconds are taken); the queue limit says the real count and
the setting; a batch file's errors name the file, line and job, with one exit code per kind."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from conftest import Daemon

from sage_ops.cli import main
from sage_ops.cli.batchfile import BatchFileError, load_batch
from sage_ops.cli.job_spec import build_spec
from sage_ops.errors import Invalid, Rejected
from sage_ops.plaintext import job_detail
from sage_ops.schemas import JobSpec, RetryPolicy
from sage_ops.server.scheduling.admission import queue_full
from sage_ops.units import parse_duration, parse_memory
from sage_ops.views import JobView

MiB = 2**20


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The CLI in this process: its exit code and its stderr."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    return int(done.value.code or 0), capsys.readouterr().err


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No daemon: a command that got as far as asking one would exit 3."""
    monkeypatch.setenv("SAGE_OPS_ADDRESS", f"unix://{tmp_path}/none.sock")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- a mistake is caught at submit ---------------------------------------------------------------
def test_a_missing_script_is_a_usage_error(nowhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["submit", "nosuch.py"], capsys)[0] == 2


def test_a_missing_script_is_named_in_one_line(nowhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["submit", "nosuch.py"], capsys)[1].splitlines() == [
        "error: no such script: nosuch.py; --command runs it as a command on the node's PATH "
        "(see 'sage-ops submit --help')"]


def test_a_missing_script_may_be_run_as_a_command(nowhere: Path) -> None:
    assert build_spec(["nosuch.py"], command=True, name=None, cpu=None, memory=None, gpu=None, resource=(), env=(),
                      workdir=None, priority=0, timeout=None)["command"] == ["nosuch.py"]


def test_a_directory_is_not_a_script(nowhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (nowhere / "results").mkdir()
    code, err = cli(["submit", "results"], capsys)
    assert (code, "results is a directory, not a script" in err) == (2, True)


def test_a_missing_workdir_is_refused_at_submit(daemon: Daemon) -> None:
    before = daemon.client().get_statistics().total_jobs
    out = daemon.run("submit", "--chdir", "/nonexistent", "--", "true")
    assert (out.returncode, "working dir /nonexistent: no such directory" in out.stderr,
            daemon.client().get_statistics().total_jobs) == (2, True, before)


def test_a_missing_working_dir_is_refused_for_the_python_client_too(daemon: Daemon) -> None:
    with pytest.raises(Invalid, match="working dir /nonexistent: no such directory"):
        daemon.client().submit_command(["true"], working_dir="/nonexistent")


# -- one rule for sizes --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "size"), [("512", 512 * MiB), ("512MiB", 512 * MiB), ("8GB", 8 * 10**9),
                                            ("1G", 10**9), ("0.5", MiB // 2)])
def test_a_bare_memory_number_is_mib(text: str, size: int) -> None:
    assert parse_memory(text) == size


def test_submit_memory_512_asks_for_512_mib(nowhere: Path) -> None:
    spec = build_spec(["true"], command=True, name=None, cpu=None, memory="512", gpu=None, resource=(), env=(),
                      workdir=None, priority=0, timeout=None)
    assert spec["resources"]["memory"] == 512 * MiB


def test_a_bad_memory_size_is_a_usage_error(nowhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["submit", "--memory", "lots", "--", "true"], capsys)[0] == 2


def test_a_small_memory_is_never_shown_as_0mib(capsys: pytest.CaptureFixture[str]) -> None:
    spec = JobSpec(command=["true"], resources={"memory": 512})
    view = JobView(id="j", name="j", status="PENDING", created_at=datetime.now(), spec=spec)
    job_detail(view.model_dump(mode="json"))
    assert "memory=512B" in capsys.readouterr().out


# -- one rule for durations ----------------------------------------------------------------------
@pytest.mark.parametrize(("text", "secs"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800)])
def test_durations_take_units(text: str, secs: float) -> None:
    assert parse_duration(text) == secs


def test_a_spec_takes_a_timeout_with_a_unit() -> None:
    assert JobSpec(command=["true"], timeout="1h").timeout == 3600


def test_a_retry_policy_takes_a_delay_with_a_unit() -> None:
    assert RetryPolicy(retry_delay="15m").retry_delay == 900


@pytest.fixture(scope="module")
def timed(daemon: Daemon) -> dict:
    out = daemon.run("submit", "--json", "--timeout", "1h", "--retries", "1", "--retry-delay", "90s", "--", "true")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_submit_timeout_takes_1h(timed: dict) -> None:
    assert timed["spec"]["timeout"] == 3600


def test_submit_retry_delay_takes_90s(timed: dict) -> None:
    assert timed["spec"]["retry_policy"]["retry_delay"] == 90


def test_wait_timeout_takes_a_unit(daemon: Daemon, timed: dict) -> None:
    assert daemon.run("wait", "--timeout", "2m", timed["id"]).returncode == 0


def test_a_bad_duration_is_a_usage_error(nowhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["submit", "--timeout", "soon", "--", "true"], capsys)[0] == 2


# -- the queue limit -----------------------------------------------------------------------------
def test_the_queue_limit_counts_the_batch_and_names_the_setting() -> None:
    assert queue_full(4, 1000, 1000) == (
        "queue full: 4 active jobs + 1000 in this batch, jobmanager.max_jobs is 1000 (raise it in the daemon's "
        "config file, `jobmanager: {max_jobs: N}`, or with SAGE_OPS_JOBMANAGER__MAX_JOBS=N, then restart the daemon)")


def test_a_batch_over_the_limit_is_refused_whole(daemon: Daemon) -> None:
    with pytest.raises(Rejected, match=r"^queue full: \d+ active jobs \+ 1001 in this batch, jobmanager.max_jobs"):
        daemon.client().submit_batch([{"command": ["true"]}] * 1001)


def test_a_batch_over_the_limit_exits_1(daemon: Daemon) -> None:
    (daemon.home / "burst.yaml").write_text("jobs:\n" + "  - {command: 'true'}\n" * 1001)
    out = daemon.run("submit-batch", "burst.yaml")
    assert (out.returncode, "SAGE_OPS_JOBMANAGER__MAX_JOBS" in out.stderr) == (1, True)


# -- batch files ---------------------------------------------------------------------------------
def batch_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    with pytest.raises(BatchFileError) as err:
        load_batch(path)
    return err.value.format_message()


def test_a_yaml_error_is_one_line_naming_the_file_and_line(tmp_path: Path) -> None:
    message = batch_error(tmp_path, "jobs:\n  - name: a\n    command: [true\n  - name: b\n")
    assert re.fullmatch(rf"{tmp_path}/jobs.yaml:4:\d+: not valid YAML: [^\n]+", message), message


def test_an_unknown_key_names_the_key_the_job_and_the_file(tmp_path: Path) -> None:
    message = batch_error(tmp_path, "jobs:\n  - {name: prep, command: 'true'}\n  - name: train\n"
                                    "    command: 'true'\n    retries: 3\n")
    assert message == (f"{tmp_path}/jobs.yaml:5: jobs[1] (train): unknown key 'retries' (did you mean "
                       "'retry_policy: {max_retries: N}'?)")


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    message = batch_error(tmp_path, "jobs:\n  - {name: a, command: 'true'}\n  - {name: a, command: 'false'}\n")
    assert message.startswith(f"{tmp_path}/jobs.yaml:3: jobs[1] (a): the name is also jobs[0]'s")


def test_a_batch_file_takes_units(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_text("jobs:\n  - {command: 'true', timeout: 15m, resources: {memory: 512}}\n")
    spec = load_batch(tmp_path / "jobs.yaml")[0]
    assert (spec.timeout, spec.resources.memory) == (900, 512 * MiB)


def test_a_cycle_names_its_members(daemon: Daemon) -> None:
    (daemon.home / "cycle.yaml").write_text("jobs:\n  - {name: a, command: 'true', after: [b]}\n"
                                            "  - {name: b, command: 'true', after: [a]}\n")
    out = daemon.run("submit-batch", "cycle.yaml")
    assert (out.returncode, "cycle: a -> b -> a" in out.stderr) == (2, True), out.stderr


def test_every_batch_file_mistake_exits_2(daemon: Daemon) -> None:
    (daemon.home / "bad.yaml").write_text("jobs:\n  - {name: a, command: 'true', after: [nosuchjob]}\n")
    out = daemon.run("submit-batch", "bad.yaml")
    assert (out.returncode, "bad.yaml:2: jobs[0] (a): unknown dependency: nosuchjob" in out.stderr) == (2, True), \
        out.stderr


def test_a_token_expiry_takes_a_unit(daemon: Daemon) -> None:
    out = daemon.run("token", "create", "--name", "units", "--role", "admin", "--expires-in", "30d", "--json")
    assert out.returncode == 0, out.stderr

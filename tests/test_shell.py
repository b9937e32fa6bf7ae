"""The CLI as the shell sees it: output formats of every read command, exit codes per class of
error, NO_COLOR, config precedence and errors, completion in real bash, the daemon's log, the
wheel's data files and the systemd units."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SAGE, Daemon
from pydantic import TypeAdapter

from sage_ops.cli.daemon import follow_file
from sage_ops.cluster import NodeView
from sage_ops.config import load_config
from sage_ops.errors import Invalid
from sage_ops.telemetry import Health, Stats
from sage_ops.views import GraphView, JobEventView, JobView

ROOT = Path(__file__).resolve().parent.parent


def run_json(daemon: Daemon, *args: str) -> Any:
    out = daemon.run(*args, "-o", "json", check=True)
    return json.loads(out.stdout)


def test_read_commands_in_every_format(daemon: Daemon) -> None:
    job = daemon.submit_q("--name", "formats", "--", "true")
    daemon.run("wait", job, check=True)
    shapes: dict[tuple[str, ...], Any] = {
        ("jobs",): list[JobView], ("status", job): JobView, ("history", job): list[JobEventView],
        ("graph", job): GraphView, ("health",): Health, ("stats",): Stats, ("wait", job): list[JobView],
        ("nodes", "list"): list[NodeView], ("daemon", "status"): Health,
    }
    for args, shape in shapes.items():
        data = run_json(daemon, *args)
        TypeAdapter(shape).validate_python(data)  # the API's schema, field for field
        as_yaml = yaml.safe_load(daemon.run(*args, "-o", "yaml", check=True).stdout)
        if args[0] in ("health", "stats", "daemon", "nodes"):  # live figures move between two calls
            assert type(as_yaml) is type(data) and len(as_yaml) == len(data), args
        else:
            assert as_yaml == data, args
    for args in (("tenant", "list"), ("token", "list"), ("audit", "--limit", "5"), ("whoami",), ("config", "show")):
        assert isinstance(run_json(daemon, *args), (list, dict)), args
    listed = run_json(daemon, "jobs", "--name", "formats")
    assert [j["id"] for j in listed] == [job]
    assert listed[0]["created_at"].endswith("Z")  # ISO-8601 UTC in machine formats
    assert daemon.run("jobs", "--name", "formats", "-o", "name", check=True).stdout == f"{job}\n"
    assert daemon.run("jobs", "--name", "formats", "-q", check=True).stdout == f"{job}\n"  # ids only
    wide = daemon.run("jobs", "--name", "formats", "-o", "wide", check=True).stdout
    assert "TENANT" in wide and "ATTEMPTS" in wide and job in wide
    assert "ago" in daemon.run("jobs", "--name", "formats", check=True).stdout  # relative ages in tables
    logs = daemon.run("logs", job, "-o", "json", check=True)
    assert logs.stderr == ""  # JSON on stdout only
    both = daemon.run("jobs", "-o", "yaml", "--json")
    assert both.returncode == 2 and "one output format" in both.stderr


def test_exit_codes_per_class_of_error(daemon: Daemon, tmp_path: Path) -> None:
    assert daemon.run("jobs", "--no-such-flag").returncode == 2  # usage
    assert daemon.run("submit", "--cpu", "lots", "--", "true").returncode == 2
    missing = daemon.run("status", "0123456789ab")
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
    failed = daemon.submit_q("--", "false")
    assert daemon.run("wait", failed).returncode == 1  # a failed job
    away = daemon.run("--address", f"unix://{tmp_path}/nobody.sock", "jobs")
    assert away.returncode == 3 and away.stderr.count("\n") == 1  # daemon unreachable
    assert daemon.run("--address", f"unix://{tmp_path}/nobody.sock", "daemon", "status").returncode == 3
    assert daemon.run("jobs").returncode == 0


def _in_a_terminal(daemon: Daemon, *args: str, no_color: bool) -> str:
    """Run the CLI under a pseudo-terminal (util-linux `script`), as a person would."""
    env = dict(daemon.env, TERM="xterm-256color", COLUMNS="120")
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    cmd = " ".join([*SAGE, *args])
    out = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=env, capture_output=True, text=True,
                         timeout=120, cwd=daemon.home)
    return out.stdout


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux `script` is not installed")
def test_no_color_gives_no_escape_codes(daemon: Daemon) -> None:
    daemon.run("wait", daemon.submit_q("--", "true"), check=True)
    assert "\x1b[" in _in_a_terminal(daemon, "jobs", no_color=False)  # colour on a terminal...
    plain = _in_a_terminal(daemon, "jobs", no_color=True)
    assert "COMPLETED" in plain and "\x1b[" not in plain  # ...and none under NO_COLOR
    assert "\x1b[" not in daemon.run("jobs", check=True).stdout  # nor into a pipe


def test_config_precedence_sources_and_unknown_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("SAGE_OPS_")]:
        monkeypatch.delenv(var)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("jobmanager: {port: 1111, max_jobs: 7, kill_grace: 2}\n")
    monkeypatch.setenv("SAGE_OPS_JOBMANAGER__PORT", "2222")
    monkeypatch.setenv("SAGE_OPS_JOBMANAGER__MAX_JOBS", "8")
    c = load_config(cfg, **{"jobmanager.port": 3333})
    assert (c.jobmanager.port, c.jobmanager.max_jobs, c.jobmanager.kill_grace) == (3333, 8, 2)  # flag > env > file
    assert load_config(cfg).jobmanager.job_timeout == 3600  # > defaults
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(HOME=str(tmp_path), SAGE_OPS_JOBMANAGER__MAX_JOBS="8")
    shown = subprocess.run([*SAGE, "--config", str(cfg), "config", "show", "--sources", "-o", "json"], env=env,
                           capture_output=True, text=True, check=True)
    origin = {row["key"]: (row["value"], row["source"]) for row in json.loads(shown.stdout)}
    assert origin["jobmanager.max_jobs"] == (8, "env SAGE_OPS_JOBMANAGER__MAX_JOBS")
    assert origin["jobmanager.kill_grace"] == (2.0, f"file {cfg}")
    assert origin["jobmanager.job_timeout"] == (3600.0, "default")
    cfg.write_text("jobmanager: {bogus: 1}\n")
    with pytest.raises(Invalid, match=rf"config {cfg}: jobmanager.bogus: unknown key"):
        load_config(cfg)
    bad = subprocess.run([*SAGE, "--config", str(cfg), "jobs"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "jobmanager.bogus: unknown key" in bad.stderr and str(cfg) in bad.stderr
    assert "Traceback" not in bad.stderr


def test_config_init_writes_a_commented_file_that_loads(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "SAGE_OPS_"))}
    env["HOME"] = str(tmp_path)
    first = subprocess.run([*SAGE, "config", "init"], env=env, capture_output=True, text=True, check=True)
    path = Path(first.stdout.strip())
    assert path == tmp_path / ".config" / "sage-ops" / "config.yaml" and oct(path.stat().st_mode)[-3:] == "600"
    text = path.read_text()
    assert "# max_jobs: 1000" in text and "# active (non-terminal) jobs; more are REJECTED" in text
    assert load_config(path).jobmanager.max_jobs == 1000
    again = subprocess.run([*SAGE, "config", "init"], env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "--force" in again.stderr


def test_version_names_sage_ops_ray_and_python() -> None:
    out = subprocess.run([*SAGE, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split()[0] for line in out] == ["sage-ops", "ray", "python"]


def test_checked_in_completions_are_current() -> None:
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_completions.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def _bash_complete(daemon: Daemon, words: list[str], address: str | None = None) -> tuple[list[str], str]:
    """TAB in real bash: source the checked-in script, set COMP_WORDS, call its function."""
    env = dict(daemon.env)
    env["SAGE_OPS_ADDRESS"] = address or f"unix://{daemon.socket}"
    bindir = daemon.home / "bin"  # `sage-ops` on PATH, as an installed one would be
    bindir.mkdir(exist_ok=True)
    exe = bindir / "sage-ops"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m sage_ops \"$@\"\n")
    exe.chmod(0o755)
    env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
    quoted = " ".join(f"'{w}'" for w in words)
    script = (f"source {ROOT / 'completions' / 'sage-ops.bash'}; COMP_WORDS=({quoted}); "
              f"COMP_CWORD={len(words) - 1}; _sage_ops_completion sage-ops; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env, capture_output=True, text=True,
                         timeout=60)
    return [line for line in out.stdout.splitlines() if line], out.stderr


def test_bash_completes_job_ids_nodes_and_statuses(daemon: Daemon, tmp_path: Path) -> None:
    running = daemon.submit_q("--name", "to-complete", "--", "sleep", "60")
    until = time.monotonic() + 60
    while json.loads(daemon.run("status", running, "--json").stdout)["status"] != "RUNNING":
        assert time.monotonic() < until
        time.sleep(0.2)
    done = daemon.submit_q("--", "true")
    daemon.run("wait", done, check=True)
    got, err = _bash_complete(daemon, ["sage-ops", "logs", running[:4]])
    assert running in got and done not in got and err == ""  # logs: the running jobs
    got, _ = _bash_complete(daemon, ["sage-ops", "status", done[:6]])
    assert done in got
    names = [n["name"] for n in json.loads(daemon.run("nodes", "list", "--json").stdout)]
    got, _ = _bash_complete(daemon, ["sage-ops", "nodes", "drain", ""])
    assert set(got) == set(names)
    got, _ = _bash_complete(daemon, ["sage-ops", "jobs", "--status", "RUN"])
    assert got == ["RUNNING"]
    got, _ = _bash_complete(daemon, ["sage-ops", "sub"])
    assert got == ["submit", "submit-batch"]
    # no daemon: no candidates, no noise, and quick
    t = time.monotonic()
    got, err = _bash_complete(daemon, ["sage-ops", "logs", ""], address=f"unix://{tmp_path}/none.sock")
    assert got == [] and err == ""
    assert time.monotonic() - t < 30  # generous: a hang would be minutes
    daemon.run("cancel", running)


def test_daemon_logs_tail(daemon: Daemon) -> None:
    out = daemon.run("daemon", "logs", "-n", "3", check=True)
    lines = out.stdout.splitlines()
    assert 0 < len(lines) <= 3 and all(" sage_ops" in line for line in lines)
    assert lines[0][:4].isdigit() and "Z " in lines[0]  # UTC timestamps first


def test_follow_file_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "jobmanager.log"
    log.write_text("old line\n")
    seen: list[str] = []

    def reader() -> None:
        for line in follow_file(log, poll=0.02):
            seen.append(line)
            if line == "after rotation 2":
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.3)
    with open(log, "a") as f:
        f.write("before rotation\n")
    time.sleep(0.3)
    log.rename(tmp_path / "jobmanager.log.1")
    log.write_text("after rotation 1\nafter rotation 2\n")
    t.join(10)
    assert seen == ["before rotation", "after rotation 1", "after rotation 2"]  # not the old line


def test_wheel_carries_man_pages_completions_and_units(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next(tmp_path.glob("sage_ops-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "sage_ops-{}.data/data/share/".format(wheel.name.split("-")[1])
    for path in ("man/man1/sage-ops.1", "man/man1/sage-ops-submit.1", "bash-completion/completions/sage-ops.bash",
                 "zsh/site-functions/_sage-ops", "fish/vendor_completions.d/sage-ops.fish",
                 "sage-ops/systemd/sage-ops.service", "sage-ops/systemd/user/sage-ops.service"):
        assert data + path in names, path
    assert "sage_ops/tui/app.tcss" in names


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    exe = shutil.which("sage-ops") or f"{sys.executable} -m sage_ops"
    (tmp_path / "man").mkdir()
    (tmp_path / "man" / "man1").symlink_to(ROOT / "man")  # as installed: share/man/man1
    env = dict(os.environ, MANPATH=f"{tmp_path / 'man'}:")
    for unit, flags in (("sage-ops.service", []), ("user/sage-ops.service", ["--user"])):
        text = (ROOT / "packaging" / "systemd" / unit).read_text()
        assert "daemon start --foreground" in text
        here = tmp_path / unit.replace("/", "-").replace("user-", "")
        here.parent.mkdir(exist_ok=True)
        here.write_text(text.replace("/usr/local/bin/sage-ops", exe).replace("%h/.local/bin/sage-ops", exe))
        if flags:
            continue  # --user needs a user manager (none in this container); the text was checked above
        out = subprocess.run(["systemd-analyze", "verify", str(here)], capture_output=True, text=True, env=env)
        problems = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
        assert problems == [], problems

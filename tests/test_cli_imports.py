"""The CLI answers at once because its common commands import nothing heavy: each command runs in
a subprocess against a real daemon and reports which modules it loaded (behaviour, not time).
Also the pieces that make that possible: lazy command modules, the config read without
pydantic, Ray's version without importlib.metadata."""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import Daemon

from sage_ops import cli as cli_package
from sage_ops import configfile
from sage_ops.config import Config

HEAVY = ("httpx", "rich", "pydantic", "pydantic_settings", "yaml", "textual", "ray", "sqlalchemy", "sage_ops.schemas",
         "sage_ops.client")
COMMANDS = ("--version", "jobs", "status", "submit", "logs", "complete")
REPORT = """
import json, os, sys
from sage_ops.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(os.environ["MODULES_REPORT"], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


@pytest.fixture(scope="module")
def job(daemon: Daemon) -> str:
    job_id = daemon.submit_q("--name", "imports", "--", "echo", "hello")
    daemon.run("wait", job_id, check=True)
    return job_id


@pytest.fixture(scope="module")
def runs(daemon: Daemon, job: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """command -> (exit code, stdout, loaded modules), each command run once."""
    where = tmp_path_factory.mktemp("imports")

    @functools.cache
    def run(command: str) -> tuple[int, str, frozenset[str]]:
        argv = {"--version": ["--version"], "jobs": ["jobs"], "status": ["status", job], "logs": ["logs", job],
                "submit": ["submit", "-q", "--", "true"], "complete": []}[command]
        env = {**daemon.env, "SAGE_OPS_ADDRESS": f"unix://{daemon.socket}", "MODULES_REPORT": str(where / command)}
        if command == "complete":  # TAB after `sage-ops logs `, as bash asks it
            env.update(_SAGE_OPS_COMPLETE="bash_complete", COMP_WORDS="sage-ops logs ", COMP_CWORD="2")
        out = subprocess.run([sys.executable, "-c", REPORT, *argv], env=env, capture_output=True, text=True,
                             timeout=60, cwd=daemon.home)
        report = json.loads((where / command).read_text())
        return report["code"] or 0, out.stdout, frozenset(report["modules"])

    return run


@pytest.mark.parametrize("command", COMMANDS)
def test_the_common_command_succeeds(runs: Any, command: str) -> None:
    assert runs(command)[0] == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_the_common_command_prints_its_answer(runs: Any, job: str, command: str) -> None:
    expected = {"--version": "sage-ops ", "jobs": job, "status": job, "logs": "hello", "submit": "\n",
                "complete": "plain,"}[command]
    assert expected in runs(command)[1]


@pytest.mark.parametrize("heavy", HEAVY)
@pytest.mark.parametrize("command", COMMANDS)
def test_the_common_command_leaves_heavy_modules_alone(runs: Any, command: str, heavy: str) -> None:
    assert not {m for m in runs(command)[2] if m == heavy or m.startswith(heavy + ".")}


def test_every_command_is_registered_where_the_lazy_group_looks() -> None:
    for module in set(cli_package.COMMANDS.values()):
        importlib.import_module(f"sage_ops.cli.{module}")
    assert set(cli_package.cli.commands) == set(cli_package.COMMANDS)


def test_help_still_lists_every_command() -> None:
    listed = cli_package.cli.list_commands(click.Context(cli_package.cli))
    assert listed == sorted(cli_package.COMMANDS)


def test_the_light_config_reader_knows_every_key() -> None:
    assert {s: frozenset(f.annotation.model_fields) for s, f in Config.model_fields.items()} == configfile.KEYS


def _socket_of(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> Path | None:
    for var in [v for v in os.environ if v.startswith("SAGE_OPS_")]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    return configfile.client_socket(cfg)


def test_a_commented_out_config_gives_the_default_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sage_ops import config, paths

    assert _socket_of(tmp_path, config.template(), monkeypatch) == paths.default_socket()


def test_the_config_files_socket_is_read_without_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _socket_of(tmp_path, "jobmanager: {socket: /x/d.sock, port: 1}\n", monkeypatch) == Path("/x/d.sock")


def test_an_unknown_key_is_left_to_the_full_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _socket_of(tmp_path, "ray: {bogus: 1}\n", monkeypatch) is None


def test_the_env_socket_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = _socket_of(tmp_path, "jobmanager: {socket: /x/file.sock}\n", monkeypatch,
                     SAGE_OPS_JOBMANAGER__SOCKET="/x/env.sock")
    assert got == Path("/x/env.sock")


def test_ray_version_is_read_from_its_metadata_folder() -> None:
    assert cli_package.ray_version() == version("ray")

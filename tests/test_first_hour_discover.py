"""Issue 22, discoverability: every error says the next step (how to get a token, which option is
missing, options that exist), `doctor` fails when an installed feature cannot import, man pages
and completion work after the documented install, `submit <TAB>` completes files, and a name
filter means the same in the CLI and the TUI.

Real parts: the store on a real SQLite file, the CLI in its own process (or click's runner where
no daemon is involved), a real bash and a real `man`, a daemon with a TCP listener."""

from __future__ import annotations

import ast
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import test_token_routing
from conftest import SAGE, Daemon

from sage_ops.bodies import JobFilter

ROOT = Path(__file__).resolve().parent.parent


# -- one name rule, in the CLI and the TUI -------------------------------------------------------
NAMES = ["analysis", "Analysis-2", "my-analytics", "train", "an_x", "a%b", "sweep-1", "SWEEP-2", "pre-sweep-3"]


@pytest.fixture(scope="module")
def named_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sage_ops.server.storage import store as st

    store = st.Store(f"sqlite:///{tmp_path_factory.mktemp('names') / 'n.db'}")
    now = time.time()
    rows = [{"id": f"x{i:08d}", "seq": i, "name": name, "tenant": None, "status": "COMPLETED", "reason": None,
             "priority": 0, "kind": "command", "spec": '{"command": ["true"]}', "exit_code": 0, "result": None,
             "attempts_made": 1, "node": None, "created_at": now, "updated_at": now, "started_at": now,
             "ended_at": now} for i, name in enumerate(NAMES, 1)]
    with store.engine.begin() as conn:
        st.insert_jobs(conn, rows, [])
    yield store
    store.close()


def _listed(store: Any, pattern: str) -> set[str]:
    from sage_ops.server.storage import store as st

    with store.engine.connect() as conn:
        return {j.name for j in st.list_jobs(conn, JobFilter(name=pattern), limit=100)[0]}


@pytest.mark.parametrize(("pattern", "want"), [
    ("analy", {"analysis", "Analysis-2", "my-analytics"}),  # text: anywhere, any case
    ("ANALY*", {"analysis", "Analysis-2"}),  # a glob: the whole name, any case
    ("sweep-*", {"sweep-1", "SWEEP-2"}),  # a glob is anchored (not pre-sweep-3)
    ("*[0-9]", {"Analysis-2", "sweep-1", "SWEEP-2", "pre-sweep-3"}),  # a character class
    ("an_", {"an_x"}),  # SQL's wildcards are plain characters
    ("%", {"a%b"}),
])
def test_a_name_filter_is_text_anywhere_or_a_glob_in_any_case(named_store: Any, pattern: str,
                                                              want: set[str]) -> None:
    assert _listed(named_store, pattern) == want


def test_the_tuis_filter_asks_the_daemon_the_same_as_the_cli(named_store: Any) -> None:
    from sage_ops.tui.screens.jobs import name_glob

    assert _listed(named_store, name_glob("  analy ") or "") == _listed(named_store, "analy")


@pytest.mark.parametrize("pattern", ["analy", "ANALY*", "sweep-*", "*[0-9]", "an_", "%"])
def test_live_rows_in_the_tui_follow_the_daemons_rule(named_store: Any, pattern: str) -> None:
    from sage_ops.name_filter import matches

    assert {n for n in NAMES if matches(n, pattern)} == _listed(named_store, pattern)


# -- every error says the next step --------------------------------------------------------------
tcp_listener = test_token_routing.tcp_daemon  # that module's daemon with a TCP listener (the same fixture)


def test_a_tcp_call_without_a_token_says_how_to_get_one(tcp_listener: Daemon, tmp_path: Path) -> None:
    tcp = tcp_listener.client().health_check().tcp
    env = dict(tcp_listener.env, XDG_STATE_HOME=str(tmp_path))  # not this daemon's state dir: no token goes
    out = subprocess.run([*SAGE, "--address", f"tcp://{tcp}", "jobs"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stderr.count("\n")) == (1, 1)
    assert "sage-ops token create --tenant TENANT --name NAME" in out.stderr


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_token_create_without_a_tenant_names_the_missing_option(role: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sage_ops.cli import cli

    out = CliRunner().invoke(cli, ["--address", f"unix://{tmp_path}/none.sock", "token", "create", "--name", "x",
                                   "--role", role])
    assert out.exit_code == 2
    assert "give --tenant TENANT" in out.output and "--role admin" in out.output


# -- every option a message suggests exists ------------------------------------------------------
# options of other programs that sage-ops's text names on purpose, and why
FOREIGN = {"--mem": "Slurm's, compared with --memory", "--input": "a job's own argument in an example",
           "--epochs": "a job's own argument in an example", "--no-index": "pip's", "--find-links": "pip's",
           "--seed": "a job's own argument in an example", "--start": "squeue's, compared with the estimate"}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
COMMAND = re.compile(r"sage-ops((?:\s+[a-z][a-z0-9-]*)*)([^;\n`()]*)")


def _commands() -> dict[tuple[str, ...], click.Command]:
    from sage_ops.cli import cli

    found: dict[tuple[str, ...], click.Command] = {}

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        found[path] = cmd
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(click.Context(cmd)):
                sub = cmd.get_command(click.Context(cmd), name)
                if sub is not None:
                    walk(sub, (*path, name))

    walk(cli, ())
    return found


def _options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")} | {"--help"}


def _texts() -> Iterator[tuple[str, str]]:
    """Every message the package could show a person: its string literals (not argv items, which
    start with --, nor docstrings, which are notes for readers of the code) and the CLI's help."""
    for f in sorted((ROOT / "sage_ops").rglob("*.py")):
        tree = ast.parse(f.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs \
                    and not node.value.startswith("--"):
                yield f"{f.relative_to(ROOT)}:{node.lineno}", node.value
    for path, cmd in _commands().items():
        for text in [cmd.help or "", *(getattr(p, "help", None) or "" for p in cmd.params)]:
            yield f"sage-ops {' '.join(path)} --help", text


def test_every_option_a_message_names_exists() -> None:
    commands = _commands()
    known = set().union(*map(_options, commands.values())) | set(FOREIGN)
    missing = [(where, opt) for where, text in _texts() if "pip install" not in text
               for opt in OPTION.findall(text) if opt not in known]
    assert missing == []


def test_an_option_after_a_command_is_that_commands() -> None:
    """`sage-ops nodes add ... --key`: --key is an option of `nodes add` or of a group above it."""
    commands = _commands()
    wrong = []
    for where, text in _texts():
        for m in COMMAND.finditer(text):
            path: tuple[str, ...] = ()
            for word in m.group(1).split():
                if (*path, word) not in commands:
                    break
                path = (*path, word)
            allowed = set(FOREIGN).union(*(_options(commands[path[:i]]) for i in range(len(path) + 1)))
            wrong += [(where, " ".join(path), opt) for opt in OPTION.findall(m.group(2)) if opt not in allowed]
    assert wrong == []


# -- doctor fails when a feature cannot import ---------------------------------------------------
def test_doctor_fails_naming_a_feature_that_cannot_import(tcp_listener: Daemon, tmp_path: Path) -> None:
    assert tcp_listener.run("doctor", "--json").returncode == 0  # the same machine, textual intact
    (tmp_path / "textual").mkdir()  # a broken textual ahead of the real one: a real failure to import
    (tmp_path / "textual" / "__init__.py").write_text("import _textual_is_broken_here\n")
    env = dict(tcp_listener.env, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path),
                                                                          os.environ.get("PYTHONPATH")])))
    out = subprocess.run([*SAGE, "doctor", "--json"], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tcp_listener.home)
    assert out.returncode == 1
    features = next(c for c in json.loads(out.stdout) if c["check"] == "features")
    assert features["detail"] == ("the TUI (sage-ops tui) cannot import: ModuleNotFoundError: No module named "
                                  "'_textual_is_broken_here'")


# -- TAB and man in a real shell -----------------------------------------------------------------
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")  # what Debian's ~/.bashrc sources


def _shell_env(home: Path) -> dict[str, str]:
    """A user with nothing set up: `sage-ops` on PATH (as an install puts it), no MANPATH."""
    (home / "bin").mkdir(parents=True, exist_ok=True)
    exe = home / "bin" / "sage-ops"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m sage_ops \"$@\"\n")
    exe.chmod(0o755)
    keep = {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "LANG")}
    return {**keep, "HOME": str(home), "PATH": f"{home / 'bin'}:/usr/bin:/bin", "TERM": "dumb",
            "SAGE_OPS_ADDRESS": f"unix://{home}/none.sock"}


def _tab(env: dict[str, str], cwd: Path, setup: str, typed: str, want: str, then: str = "") -> str:
    """Type `typed` and TAB into an interactive bash (on a pty, as a terminal would), wait for
    `want` to appear, then run `then`; everything the terminal showed after the setup."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a login-less interactive bash
        os.chdir(cwd)
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)
    seen = b""

    def until(token: str, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while token.encode() not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    return

    try:
        os.write(fd, f"PS1='ready> '; {setup}; echo set-up\n".encode())
        until("set-up\r\nready> ")
        seen = b""
        os.write(fd, f"{typed}\t".encode())
        until(want)
        if then:
            os.write(fd, f"\x15{then}; echo done-$((6*7))\n".encode())  # ctrl-u: the typed line goes
            until("done-42\r\n")
        return seen.decode(errors="replace")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def test_submit_tab_completes_file_names(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "train_model.py").write_text("print('hi')\n")
    screen = _tab(_shell_env(tmp_path), tmp_path / "work", f"source {ROOT / 'completions' / 'sage-ops.bash'}",
                  "sage-ops submit tra", "train_model.py", then="complete -p sage-ops")
    assert "complete -o nosort -F _sage_ops_completion sage-ops" in screen  # bash asked sage-ops itself
    assert "sage-ops submit train_model.py" in screen


@pytest.mark.skipif(not BASH_COMPLETION.is_file(), reason="the bash-completion package is not installed")
def test_completion_install_is_what_bash_completion_loads(tmp_path: Path) -> None:
    env = _shell_env(tmp_path)
    subprocess.run(["sage-ops", "completion", "bash", "--install"], env=env, check=True, capture_output=True,
                   timeout=60)
    screen = _tab(env, tmp_path, f"source {BASH_COMPLETION}", "sage-ops submit-b", "submit-batch",
                  then="complete -p sage-ops")
    assert "complete -o nosort -F _sage_ops_completion sage-ops" in screen


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_man_install_is_where_man_looks_without_manpath(tmp_path: Path) -> None:
    env = _shell_env(tmp_path)
    subprocess.run(["sage-ops", "man", "--install"], env=env, check=True, capture_output=True, timeout=60)
    found = subprocess.run(["man", "-w", "sage-ops-submit"], env=env, capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == str(tmp_path / "share" / "man" / "man1" / "sage-ops-submit.1")

"""Issue 22, discoverability: every error says the next step (how to get a token, which option is
missing, options that exist), `doctor` fails when an installed feature cannot import, man pages
and completion work after the documented install, `submit <TAB>` completes files, and a name
filter means the same in the CLI and the TUI.

Real parts: the store on a real SQLite file, the CLI in its own process (or click's runner where
no daemon is involved), a real bash and a real `man`, a daemon with a TCP listener."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_token_routing
from conftest import SAGE, Daemon

from sage_ops.schemas import JobFilter

ROOT = Path(__file__).resolve().parent.parent


# -- one name rule, in the CLI and the TUI -------------------------------------------------------
NAMES = ["analysis", "Analysis-2", "my-analytics", "train", "an_x", "a%b", "sweep-1", "SWEEP-2", "pre-sweep-3"]


@pytest.fixture(scope="module")
def named_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sage_ops.server import store as st

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
    from sage_ops.server import store as st

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

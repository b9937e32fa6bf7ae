"""`sage-ops tui` in a real terminal: tmux runs it against a real daemon, send-keys drives it and
capture-pane reads the screen, as a person at a terminal would."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time

import pytest
from conftest import Daemon, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, d: Daemon, width: int = 120, height: int = 40) -> None:
        self.sock = f"sgo-{d.home.name}"
        keep = ("HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "SAGE_OPS_CONFIG", "PATH", "RAY_AUTH_MODE",
                "RAY_AUTH_TOKEN_PATH")
        env = [f"{k}={d.env[k]}" for k in keep if k in d.env] + ["TERM=xterm-256color"]
        cmd = shlex.join(["env", "-i", *env, sys.executable, "-m", "sage_ops", "tui"])
        self.tmux("new-session", "-d", "-s", "tui", "-x", str(width), "-y", str(height), cmd)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "tui")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "tui", *keys)
        time.sleep(0.3)

    def alive(self) -> bool:
        return subprocess.run(["tmux", "-L", self.sock, "has-session", "-t", "tui"],
                              capture_output=True).returncode == 0

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)


def test_the_tui_in_tmux_shows_jobs_navigates_and_quits(daemon: Daemon) -> None:
    job = daemon.submit_q("--name", "tmux-visible", "--", "sh", "-c", "echo hello-from-tmux; sleep 30")
    term = Tmux(daemon)
    try:
        wait_until(lambda: "tmux-visible" in term.screen(), timeout=60, interval=0.3)
        term.keys("Enter")  # the newest job is selected: its detail, with the live log
        wait_until(lambda: "hello-from-tmux" in term.screen(), timeout=60, interval=0.3)
        term.keys("Escape")
        term.keys("?")
        wait_until(lambda: "quit" in term.screen().lower() and "filter" in term.screen().lower(), timeout=30)
        term.keys("Escape")
        term.keys("q")
        wait_until(lambda: not term.alive(), timeout=30, interval=0.3)
    finally:
        term.close()
        daemon.client().cancel_job(job)

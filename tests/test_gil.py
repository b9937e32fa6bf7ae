"""The daemon's threads wait at most a millisecond for the GIL (gil.tune_switching)."""

from __future__ import annotations

import sys

from sage_ops.server.gil import SWITCH_INTERVAL, tune_switching


def test_the_daemon_lets_a_waiting_thread_have_the_gil_within_a_millisecond() -> None:
    before = sys.getswitchinterval()
    try:
        tune_switching()
        assert sys.getswitchinterval() == SWITCH_INTERVAL == 0.001
    finally:
        sys.setswitchinterval(before)

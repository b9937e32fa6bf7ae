"""How the daemon's threads share the interpreter: the store's writer, reads in worker threads,
Ray's callbacks and the event loop each give the GIL up around I/O and then wait to get it back.
Measured with `python -m benchmarks events` (docs/performance.md, issue 28)."""

from __future__ import annotations

import sys

SWITCH_INTERVAL = 0.001  # seconds a thread may hold the GIL while another waits (Python's default: 0.005)


def tune_switching() -> None:
    """A thread back from a short system call (a SQLite step, a socket send) waits for the GIL
    until the thread holding it is made to let go: up to 5 ms by default, and a page of events
    pays that per row read. At 1 ms the worst lag of 50 event followers through a 10,000-job burst
    was 1.09-1.14 s in four runs of five (1.33 in one), against 1.27-1.34 s in all five at 5 ms;
    at 0.25 ms, 1.17-1.32 s: switching that often costs more than it saves."""
    sys.setswitchinterval(SWITCH_INTERVAL)

"""An attempt's log lines on their way from its runner (attempt.py) to the dispatcher actor.

They travel as blocks: the runner encodes them (job_output: the API's NDJSON, the daemon stores
and serves them as they are) and sends up to FLUSH_BYTES per call. Past the actor's bound a `logs`
call waits, the runner waits for its oldest calls, and the job waits on its full pipe. Nothing is
dropped.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import ray

from ..storage.job_output import encode_lines

FLUSH_SECONDS = 0.05
FLUSH_BYTES = 4 * 1024 * 1024  # encoded log data per call: a call costs ~1 ms of CPU along the way, few big ones
LOG_CALLS = 2  # a job's unfinished log calls: past this it waits for the oldest (backpressure)


class LogCalls:
    """One attempt's encoded lines not sent yet, and its `logs` calls to the dispatcher, each
    numbered (`sent`) so the actor emits them in order."""

    def __init__(self, dispatcher: Any, job_id: str, attempt: int, cap: bytes) -> None:
        self.dispatcher, self.job_id, self.attempt, self.cap = dispatcher, job_id, attempt, cap
        self.pending: list[bytes] = []  # encoded lines not sent yet
        self.buffered = self.sent = 0  # bytes in `pending`; log calls made (each one's sequence number)
        self.last_flush = time.monotonic()
        self.calls: deque[Any] = deque()  # log calls that may be unfinished

    def add(self, data: bytes) -> None:
        if data:
            self.pending.append(data)
            self.buffered += len(data)

    def note(self, message: str) -> None:
        """A line of sage-ops's own in the job's log."""
        self.add(encode_lines([(time.time(), "system", message, self.attempt)]))

    def due(self) -> bool:
        """Whether a call is due: FLUSH_BYTES pending, or some pending for FLUSH_SECONDS."""
        return bool(self.pending) and (self.buffered >= FLUSH_BYTES
                                       or time.monotonic() - self.last_flush >= FLUSH_SECONDS)

    def flush(self, until: float = float("inf")) -> None:
        """One call for what is pending. The attempt's outcome says how many calls were made, and
        the actor reports its end only once it holds all of them (no round trip per call). Only
        LOG_CALLS may be unfinished (waited for until `until`): a dispatcher that holds too much
        for the daemon keeps them waiting, and so the job."""
        if self.pending:
            _wait_calls(self.calls, LOG_CALLS - 1, until)
            self.calls.append(self.dispatcher.logs.remote(self.job_id, self.attempt, self.sent,
                                                          b"".join(self.pending), self.cap))
            self.sent += 1
            self.pending.clear()
            self.buffered = 0
        self.last_flush = time.monotonic()


def _wait_calls(calls: deque[Any], room: int, until: float) -> None:
    """Wait until at most `room` of the log calls are unfinished (oldest first), or `until`.

    Short waits, so a cancel (KeyboardInterrupt) gets through; a failed call counts as finished.
    """
    while len(calls) > room and time.monotonic() < until:
        if ray.wait([calls[0]], timeout=0.25, fetch_local=False)[0]:
            calls.popleft()

"""What a job's process writes, as the runner keeps it: output lines (cut to a size, secrets
masked) and, for a pipeline job, the control pipe its driver reports metrics and errors on."""

from __future__ import annotations

import json
import os
import time
from typing import Any

MAX_LOG_LINE = 64 * 1024  # bytes of one output line kept in the log; the rest is cut
MAX_RESULT = 4 * 1024 * 1024
METRICS_SECONDS = 1.0  # a pipeline's operator metrics reach the daemon at most this often


def cut_line(line: bytes, size: int | None = None, limit: int = MAX_LOG_LINE) -> str:
    """One output line as a log message, cut to `limit` bytes so one huge line cannot flood the log.

    `size` is the line's full length in bytes when the reader has already dropped its tail; a cut
    line ends with a note of that length.
    """
    size = len(line) if size is None else size
    if size <= limit:
        return line.decode("utf-8", "replace")
    end = min(limit, len(line))
    for _ in range(3):  # back up to the start of a UTF-8 character rather than split it
        if 0 < end < len(line) and line[end] & 0xC0 == 0x80:
            end -= 1
    return line[:end].decode("utf-8", "replace") + f" … [line truncated: {size} bytes]"


def split_lines(held: bytes, dropped: int, chunk: bytes, limit: int = MAX_LOG_LINE) -> tuple[list[str], bytes, int]:
    """Split a read into finished (cut) lines; return them with the new (held, dropped) state.

    The unfinished line is held only up to `limit` + 1 bytes (one more than is kept, to see where
    the last character ends) and the rest just counted in `dropped`, so output that never ends its
    line costs bounded memory.
    """
    *done, rest = (held + chunk).split(b"\n")
    lines = [cut_line(ln, len(ln) + (dropped if n == 0 else 0), limit) for n, ln in enumerate(done)]
    if done:
        dropped = 0
    if len(rest) > limit + 1:
        dropped += len(rest) - limit - 1
        rest = rest[: limit + 1]
    return lines, rest, dropped


def masker(secrets: Any) -> Any:
    """Replace secret values with *** in what a job prints (as CI systems do): a secret must not
    reach the logs even when the job echoes it. Values under 4 characters would mask noise."""
    values = sorted({v for v in secrets if len(v) >= 4}, key=len, reverse=True)
    if not values:
        return lambda line: line

    def mask(line: str) -> str:
        for v in values:
            if v in line:
                line = line.replace(v, "***")
        return line

    return mask


class Control:
    """The pipe a pipeline job's driver reports on (one JSON object per line): its operators'
    metrics, forwarded to the dispatcher at most once per METRICS_SECONDS, and its error."""

    def __init__(self, job_id: str, attempt: int, dispatcher: Any, refs: list[Any]) -> None:
        self.fd, self.child = os.pipe()
        os.set_blocking(self.fd, False)
        self.job_id, self.attempt, self.dispatcher, self.refs = job_id, attempt, dispatcher, refs
        self.held = b""
        self.metrics: list[Any] | None = None
        self.sent_at = 0.0
        self.error: str | None = None

    def started(self) -> None:
        os.close(self.child)  # only the job holds the write end: EOF when it exits

    def read(self, chunk: bytes) -> None:
        *lines, self.held = (self.held + chunk).split(b"\n")
        self.held = self.held[-MAX_RESULT:]
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and isinstance(message.get("metrics"), list):
                self.metrics = message["metrics"]
            if isinstance(message, dict) and isinstance(message.get("error"), str):
                self.error = message["error"][:MAX_LOG_LINE]

    def forward(self, final: bool = False) -> None:
        # Counted with the log batches: the actor reports the end only once it holds them all.
        if self.metrics is not None and (final or time.monotonic() - self.sent_at >= METRICS_SECONDS):
            self.refs.append(self.dispatcher.pipeline.remote(self.job_id, self.attempt, self.metrics))
            self.metrics, self.sent_at = None, time.monotonic()

    def close(self) -> None:
        self.forward(final=True)
        os.close(self.fd)

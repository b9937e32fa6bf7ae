"""What a job's process writes, as the runner keeps it: output lines (cut to a size, secrets
masked, encoded once as the API's NDJSON) and, for a pipeline job, the control pipe its driver
reports metrics and errors on.

Imported by the runner on Ray workers and by the daemon's log store: standard library only.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from json.encoder import encode_basestring as _quote  # C: JSON string, non-ASCII kept (ensure_ascii=False)
from typing import Any

MAX_LOG_LINE = 64 * 1024  # bytes of one output line kept in the log; the rest is cut
MAX_RESULT = 4 * 1024 * 1024  # default of storage.max_result_bytes
MAX_LOG_BYTES = 100 * 1024 * 1024  # default of storage.max_log_bytes: a job's log, per attempt
TRUNCATED = "[sage-ops: log truncated at {} bytes]"  # the capture's last line once the quota is reached
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
    data = held + chunk
    end = data.rfind(b"\n")
    if end >= 0 and not dropped:
        # Fast path (no line cut): one decode for the whole read. A newline byte is never part of
        # a UTF-8 sequence, so this gives the same text as decoding line by line.
        lines = data[:end].decode("utf-8", "replace").split("\n")
        if end <= limit or max(map(len, lines)) * 4 <= limit:  # 4 bytes per character at most
            rest = data[end + 1:]
            if len(rest) > limit + 1:
                dropped, rest = len(rest) - limit - 1, rest[: limit + 1]
            return lines, rest, dropped
    *done, rest = data.split(b"\n")
    lines = [cut_line(ln, len(ln) + (dropped if n == 0 else 0), limit) for n, ln in enumerate(done)]
    if done:
        dropped = 0
    if len(rest) > limit + 1:
        dropped += len(rest) - limit - 1
        rest = rest[: limit + 1]
    return lines, rest, dropped


def iso_utc(t: float) -> str:
    """Epoch seconds as pydantic writes a UTC datetime (`...T12:00:00.123456Z`), so a stored line
    is byte for byte what `LogEntry.model_dump_json()` sent before."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def _frame(t: float, stream: str, attempt: int) -> tuple[str, str]:
    """A line's text before and after its JSON-quoted message: the one place the format is written."""
    return ('{"timestamp":"' + iso_utc(t) + '","stream":' + _quote(stream) + ',"message":',
            ',"attempt":' + str(int(attempt)) + "}\n")


def encode_lines(lines: Iterable[tuple[float, str, str, int]]) -> bytes:
    """(t, stream, message, attempt) tuples as NDJSON `LogEntry` lines: the log file's format and
    the API's wire format at once, so nothing downstream parses or re-encodes a line.

    Lines of one read share (t, stream, attempt): their frame is built once per run of equal keys,
    and a message costs one C-level JSON quote.
    """
    parts: list[str] = []
    key: tuple[float, str, int] | None = None
    head = tail = ""
    for t, stream, message, attempt in lines:
        if key is None or key[0] != t or key[1] != stream or key[2] != attempt:
            key = (t, stream, attempt)
            head, tail = _frame(t, stream, attempt)
        parts += (head, _quote(message), tail)
    # "replace": a lone surrogate (possible only in a system note) must not lose the whole batch
    return "".join(parts).encode("utf-8", "replace")


# What JSON escapes inside a string, but the line breaks (they separate the lines of a block).
_ESCAPED = bytes(c for c in range(32) if c != 10) + b'"\\'


def _as_is(block: bytes) -> bool:
    """True when each line of `block` is its own JSON string body: valid UTF-8 with nothing JSON
    escapes (json.dumps with ensure_ascii=False keeps every other character as it is)."""
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return len(block.translate(None, _ESCAPED)) == len(block)


class Output:
    """One of a job's pipes as encoded log lines: each read is split, cut, masked and encoded at
    once, and only the unfinished last line is held.

    Plain output (no secrets to mask, no line to cut, nothing to escape: most logs) is framed as a
    block, at memory speed; anything else goes line by line through split_lines and encode_lines,
    with the same result.
    """

    def __init__(self, stream: str, attempt: int, mask: Callable[[str], str] | None = None,
                 limit: int = MAX_LOG_LINE) -> None:
        self.stream, self.attempt, self.mask, self.limit = stream, attempt, mask, limit
        self.held, self.dropped = b"", 0

    def feed(self, chunk: bytes, t: float) -> bytes:
        """The lines this read finished, encoded (b"" if none)."""
        data, limit = self.held + chunk, self.limit
        end = data.rfind(b"\n")
        # every line but the first lies inside `chunk`: short chunk + short first line = no cut
        if end >= 0 and self.mask is None and not self.dropped and data.find(b"\n") <= limit:
            block = data[:end]
            if (len(chunk) <= limit or max(map(len, block.split(b"\n"))) <= limit) and _as_is(block):
                rest = data[end + 1:]
                self.held, self.dropped = rest[: limit + 1], max(0, len(rest) - limit - 1)
                head, tail = _frame(t, self.stream, self.attempt)
                pre, post = (head + '"').encode(), ('"' + tail).encode()
                return pre + block.replace(b"\n", post + pre) + post
        lines, self.held, self.dropped = split_lines(self.held, self.dropped, chunk, limit)
        return self._encode(lines, t)

    def close(self, t: float) -> bytes:
        """At EOF: the unfinished last line, if any, encoded."""
        if not (self.held or self.dropped):
            return b""
        line = cut_line(self.held, len(self.held) + self.dropped, self.limit)
        self.held, self.dropped = b"", 0
        return self._encode([line], t)

    def _encode(self, lines: list[str], t: float) -> bytes:
        mask = self.mask
        return encode_lines([(t, self.stream, mask(m) if mask else m, self.attempt) for m in lines])


class Capture:
    """A job's log quota, on the runner: the encoded lines are kept up to `limit` bytes, then a
    marker line ends the capture and further output is only counted (never encoded or sent), so
    the job keeps running and neither the daemon's memory nor its disk grows."""

    def __init__(self, attempt: int, limit: int = MAX_LOG_BYTES) -> None:
        self.attempt, self.limit = attempt, limit
        self.used = self.discarded = 0
        self.full = False

    def feed(self, output: Output, chunk: bytes, t: float) -> bytes:
        if self.full:
            self.discarded += len(chunk)
            return b""
        return self.take(output.feed(chunk, t), t)

    def close(self, output: Output, t: float) -> bytes:
        return b"" if self.full else self.take(output.close(t), t)

    def take(self, data: bytes, t: float) -> bytes:
        """`data` (whole encoded lines) as far as the quota allows, ended by the marker."""
        if self.used + len(data) <= self.limit:
            self.used += len(data)
            return data
        cut = data.rfind(b"\n", 0, self.limit - self.used) + 1
        self.used += cut
        self.discarded += len(data) - cut
        self.full = True
        return data[:cut] + self._marker(t, "")

    def summary(self, t: float) -> bytes:
        """At the attempt's end: the marker again, with what was discarded (b"" if nothing was)."""
        if not self.full:
            return b""
        return self._marker(t, f": {self.discarded} more bytes of output discarded (storage.max_log_bytes)")

    def _marker(self, t: float, more: str) -> bytes:
        return encode_lines([(t, "system", TRUNCATED.format(self.limit) + more, self.attempt)])


def read_result(scratch: str, name: str, limit: int = MAX_RESULT, owner: int | None = None
                ) -> tuple[bytes | None, str | None]:
    """The result file's bytes (None if there is none) and why it was ignored, if it was.

    The job owns the scratch directory, so what is there is hostile: neither the directory nor
    the file is followed if it is a link, only a regular file is read (a FIFO would block the
    runner forever), opening never blocks, and no more than `limit` bytes are read. A job run as
    `owner` gets only a file of its own read (not a hard link to one it could not read itself).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        dir_fd = os.open(scratch, flags | os.O_DIRECTORY)
    except OSError:
        return None, None
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"result file ignored: {exc.strerror or exc} (a link, or not readable)"
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "result file ignored: not a regular file"
        if owner is not None and st.st_uid != owner:
            return None, "result file ignored: not the job's own file"
        if st.st_size > limit:
            return None, f"result file ignored: {st.st_size} bytes, more than storage.max_result_bytes ({limit})"
        parts, size = [], 0
        while size <= limit and (part := os.read(fd, limit + 1 - size)):
            parts.append(part)
            size += len(part)
        if size > limit:  # it grew while being read
            return None, f"result file ignored: more than storage.max_result_bytes ({limit})"
        return b"".join(parts), None
    finally:
        os.close(fd)


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

    def __init__(self, job_id: str, attempt: int, dispatcher: Any, refs: list[Any], cap: bytes) -> None:
        self.fd, self.child = os.pipe()
        os.set_blocking(self.fd, False)
        self.job_id, self.attempt, self.dispatcher, self.refs = job_id, attempt, dispatcher, refs
        self.cap = cap  # the attempt's capability: its metrics are accepted with it only
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
            self.refs.append(self.dispatcher.pipeline.remote(self.job_id, self.attempt, self.metrics, self.cap))
            self.metrics, self.sent_at = None, time.monotonic()

    def close(self) -> None:
        self.forward(final=True)
        os.close(self.fd)

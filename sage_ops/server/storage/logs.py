"""Job log artifacts under storage.path, kept by the daemon so they outlive the Ray worker.

One file per job, in the API's own wire format: NDJSON `LogEntry` lines (timestamp, stream,
message, attempt) as job_output.encode_lines writes them, on the job's worker. The daemon appends
the blocks it receives, and serves readers raw blocks of the file: no line is parsed or encoded
again on the way, however many follow one job. Files of older versions ({"t","s","m","a"} lines)
are still served, converted line by line.

Bounded whatever the writer did: a file stops growing at its quota (`cap`, storage.max_log_bytes,
plus LOG_SLACK for the runner's own marker and notes) with a marker line, and a reader never
holds a line longer than LINE_MAX: a longer one (written by no runner of this version) is served
cut, as a valid entry.

Blocks are checked again where they are stored (`clean_block`), whatever sent them: each line a
log entry of the attempt the block came for, its message at most MAX_LOG_LINE bytes (plus the
runner's note), nothing else in it; any other line is replaced by a system line saying so. A
block as the runner writes it passes whole, in a few C-level scans.

Each line says which attempt wrote it (`attempt`): a reader may ask for one attempt's lines only,
its tail counted among them (`only_attempt`).

Followers wait on a per-job event that is woken by every append and by the job's end; they ask
for the job's state only when it may have changed (`wake`), not once per block.

With a shared store (storage.url) the local file is a cache, kept level with the store by
log_shipping.py.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ...views import LogEntry
from .job_output import MAX_LOG_LINE, TRUNCATED, cut_line, encode_lines
from .log_shipping import LogShipping

if TYPE_CHECKING:
    from .blobs import BlobStore

# bytes per read of a follower (cut at its last complete line): below the daemon's mmap threshold
# (allocator.MMAP_THRESHOLD), so each read's buffers are reused from its heap, not mapped afresh
# (50 followers: 470 -> 800 MB/s on the wire); above LINE_MAX, so a block holds a whole line
READ_BLOCK = 128 * 1024
LEGACY = b'{"t":'  # how a line of the older format starts
LINE_MAX = MAX_LOG_LINE + 1024  # a stored line the reader serves whole: a cut output line and its frame
LOG_SLACK = 64 * 1024  # past the quota: room for the runner's marker and end-of-attempt notes
_FRAME = re.compile(rb'\{"timestamp":"([0-9T:.+Z-]{1,40})","stream":"(stdout|stderr|system)","message":"')
_ATTEMPT = re.compile(rb',"attempt":([0-9]{1,9})\}$')
# a real UTC time as iso_utc writes it (February 29th is checked in leap years by _valid_times)
_TIME = (rb"(?!0000)[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
         rb"|(?:0[13578]|1[02])-31|02-29)T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?Z")
_STRING = rb'"(?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+"'  # a JSON string on one line
_TIMES = re.compile(rb'\{"timestamp":"([^"]*)"')
STREAMS = frozenset({"stdout", "stderr", "system"})
MESSAGE_MAX = MAX_LOG_LINE + 64  # a message the runner cut: MAX_LOG_LINE bytes and its note


class LogStore:
    def __init__(self, root: Path, remote: BlobStore | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()  # a sync and a write of the same file never interleave
        #: its copy in the shared store, when storage.url is set
        self.shipping = LogShipping(remote, self.path, self._lock) if remote is not None else None
        self._waiters: dict[str, asyncio.Event] = {}  # set by every append and every `wake`
        self._following: dict[str, int] = {}  # job -> its followers
        self._changes: dict[str, int] = {}  # job -> `wake`s while it has followers
        self._full: set[str] = set()  # jobs whose log this daemon has capped

    def path(self, job_id: str) -> Path:
        return self.root / job_id[:2] / f"{job_id}.log"

    def append_bytes(self, job_id: str, data: bytes, cap: int | None = None) -> None:
        """Whole encoded lines (job_output.encode_lines), as the runner sent them: one write."""
        if data:
            self._write(job_id, [data], cap)
            self._notify(job_id)

    async def append_blocks(self, blocks: Iterable[tuple[str, int, bytes]], cap: int | None = None) -> None:
        """A poll's worth of blocks (job id, attempt, data), in order: checked (clean_block) and
        written in a worker thread, so the event loop serves followers meanwhile (writing 1 GB
        costs seconds where page cache memory is slow to get), then their followers are woken."""
        by_job: dict[str, list[tuple[int, bytes]]] = {}
        for job_id, attempt, data in blocks:
            if data:
                by_job.setdefault(job_id, []).append((attempt, data))

        def write() -> None:
            for job_id, parts in by_job.items():
                self._write(job_id, [clean_block(data, attempt) for attempt, data in parts], cap)

        if by_job:
            await asyncio.to_thread(write)
            for job_id in by_job:
                self._notify(job_id)

    def _write(self, job_id: str, parts: list[bytes], cap: int | None = None) -> None:
        """Append `parts`; with a quota `cap`, the file stops at cap + LOG_SLACK: the lines that
        fit are written, then a marker, and nothing more (the runner stops at `cap` itself, so
        only a second attempt or a runner that ignores its quota gets here). The quota counts
        what the store held: a log continued after a failover stops where it would have."""
        if cap is not None and job_id in self._full:
            return
        self.sync(job_id)
        path = self.path(job_id)
        with self._lock:
            path.parent.mkdir(exist_ok=True)
            with path.open("ab") as f:
                if cap is not None:
                    parts = self._within(job_id, parts, cap + LOG_SLACK - os.fstat(f.fileno()).st_size, cap)
                f.writelines(parts)  # each part its own write: no copy into one buffer
            if self.shipping:
                self.shipping.written(job_id)

    # -- the shared store (log_shipping.py), when there is one -----------------------------------
    @property
    def remote(self) -> BlobStore | None:
        return self.shipping.remote if self.shipping else None

    @property
    def leading(self) -> bool:
        return self.shipping.leading if self.shipping else True

    @property
    def last_error(self) -> str | None:
        """Why the last upload failed (None: it did not, or there is no store)."""
        return self.shipping.last_error if self.shipping else None

    def lead(self, leading: bool = True) -> None:
        if self.shipping:
            self.shipping.lead(leading)

    def fresh(self, job_id: str) -> None:
        if self.shipping:
            self.shipping.fresh(job_id)

    def sync(self, job_id: str) -> None:
        if self.shipping:
            self.shipping.sync(job_id)

    def flush(self) -> int:
        return self.shipping.flush() if self.shipping else 0

    def backlog(self) -> int:
        return self.shipping.backlog() if self.shipping else 0

    async def uploading(self, interval: float) -> None:
        if self.shipping:
            await self.shipping.uploading(interval)

    def _within(self, job_id: str, parts: list[bytes], room: int, cap: int) -> list[bytes]:
        if sum(map(len, parts)) <= room:
            return parts
        self._full.add(job_id)
        kept: list[bytes] = []
        for part in parts:
            if len(part) > room:
                kept.append(part[: part.rfind(b"\n", 0, max(0, room)) + 1])
                break
            kept.append(part)
            room -= len(part)
        return [*kept, encode_lines([(time.time(), "system", TRUNCATED.format(cap), 0)])]

    def append(self, job_id: str, lines: Iterable[tuple[float, str, str, int]], cap: int | None = None) -> None:
        """lines: (timestamp, stream, message, attempt)."""
        self.append_bytes(job_id, encode_lines(lines), cap)

    def remove(self, job_ids: Iterable[str]) -> int:
        """Delete these jobs' logs, here and in the store (retention; blocking: a worker thread):
        bytes freed here. A job followed meanwhile reads no more."""
        freed = 0
        for job_id in job_ids:
            path = self.path(job_id)
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                pass
            self._full.discard(job_id)
            if self.shipping:
                self.shipping.remove(job_id)
        return freed

    def wake(self, job_id: str) -> None:
        """The job's state changed (it ended): its followers ask for it again."""
        if job_id in self._following:
            self._changes[job_id] = self._changes.get(job_id, 0) + 1
        self._notify(job_id)

    def _notify(self, job_id: str) -> None:
        ev = self._waiters.pop(job_id, None)
        if ev is not None:
            ev.set()

    def read(self, job_id: str, offset: int = 0) -> tuple[list[LogEntry], int]:
        """Entries from byte `offset` up to the last complete line, and the next offset."""
        self.sync(job_id)
        with _Reader(self.path(job_id), offset) as reader:
            data = b"".join(iter(reader.block, b""))
            return [LogEntry.model_validate_json(line) for line in data.split(b"\n") if line], reader.offset

    def blocks(self, job_id: str, tail: int | None = None, attempt: int | None = None) -> Iterator[bytes]:
        """The log as it is now, in blocks of whole NDJSON lines (the last `tail` lines only; of
        `attempt` only): `sync` it first where there is a shared store."""
        with _Reader(self.path(job_id), tail=tail, attempt=attempt) as reader:
            end = reader.size()
            while block := reader.block(end):
                yield block

    async def follow(self, job_id: str, is_done: Callable[[], object], tail: int | None = None,
                     poll: float = 1.0, attempt: int | None = None) -> AsyncIterator[bytes]:
        """Every line in blocks of whole NDJSON lines, then new ones as they come, until the job
        has ended and all are read.

        The job's state is asked when the follower has read all there is, and only if it may have
        changed since it was last asked (a `wake`, or `poll` seconds without news).
        """
        self._following[job_id] = self._following.get(job_id, 0) + 1
        try:
            if self.shipping:
                await asyncio.to_thread(self.shipping.sync, job_id)
            with _Reader(self.path(job_id), tail=tail, attempt=attempt) as reader:
                asked, done = -1, False
                while True:
                    ev = self._waiters.setdefault(job_id, asyncio.Event())
                    block = reader.block()
                    if block:
                        yield block
                        continue
                    if done:
                        return
                    changes = self._changes.get(job_id, 0)
                    if changes != asked:
                        asked = changes
                        done = bool(await _maybe_await(is_done()))
                        if done:
                            continue  # read once more: the last lines were appended before the end
                    try:
                        await asyncio.wait_for(ev.wait(), poll)
                    except asyncio.TimeoutError:
                        asked = -1
                        if self.shipping and not self.shipping.leading:  # a standby: the leader appends
                            await asyncio.to_thread(self.shipping.sync, job_id)
        finally:
            left = self._following.pop(job_id) - 1
            if left:
                self._following[job_id] = left
            else:  # its last follower: nothing per job stays (a waiter kept per followed job grew the soak)
                self._changes.pop(job_id, None)
                self._waiters.pop(job_id, None)


class _Reader:
    """Blocks of whole lines of one job's log from an offset (the file may not exist yet)."""

    def __init__(self, path: Path, offset: int = 0, tail: int | None = None, attempt: int | None = None) -> None:
        self.path, self.offset, self.tail = path, offset, tail
        self.attempt = attempt  # only this attempt's lines
        self.fd: int | None = None
        self.legacy: bool | None = None  # unknown until the file has a first line
        self.scanned = 0  # how far a line longer than LINE_MAX was searched for its end

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _open(self) -> bool:
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self.tail = None  # no lines yet: any that come are after the tail
                return False
            if self.tail is not None:
                self.offset = _tail_start(self.fd, os.fstat(self.fd).st_size, self.tail,
                                          None if self.attempt is None else _attempt_end(self.attempt))
        if self.legacy is None:
            head = os.pread(self.fd, len(LEGACY), 0)
            if len(head) == len(LEGACY):
                self.legacy = head == LEGACY
        return True

    def size(self) -> int:
        return os.fstat(self.fd).st_size if self._open() and self.fd is not None else 0

    def block(self, end: int | None = None) -> bytes:
        """The next whole lines (about READ_BLOCK bytes, up to `end`) of the attempt asked for, or
        b"" if none are there yet."""
        while True:
            before = self.offset
            block = self._block(end)
            if self.attempt is None or not block:
                return block
            block = only_attempt(block, self.attempt)
            if block or self.offset == before:
                return block

    def _block(self, end: int | None = None) -> bytes:
        if not self._open() or self.fd is None:
            return b""
        room = float("inf") if end is None else end - self.offset
        data = os.pread(self.fd, int(min(READ_BLOCK, max(0, room))), self.offset)
        if data.find(b"\n", 0, LINE_MAX + 1) < 0:
            # an unfinished line (wait for the rest), or one too long to serve whole: cut it
            return self._long(data[:LINE_MAX], room) if len(data) > LINE_MAX else b""
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        block = _cut_long_lines(data[:cut])
        return _convert(block) if self.legacy else block

    def _long(self, head: bytes, room: float) -> bytes:
        """A line longer than LINE_MAX at the offset: its end is searched block by block (never
        held), then it is served as one entry cut to its first LINE_MAX bytes."""
        start = self.offset
        pos = max(self.scanned, start + len(head))
        while pos < start + room:
            chunk = os.pread(self.fd, int(min(READ_BLOCK, start + room - pos)), pos)
            at = chunk.find(b"\n")
            if at >= 0:
                tail = os.pread(self.fd, min(64, pos + at - start), pos + at - min(64, pos + at - start))
                self.offset, self.scanned = pos + at + 1, 0
                return _cut_line(head, tail, pos + at - start)
            if not chunk:
                break
            pos += len(chunk)
        self.scanned = pos  # not ended yet: go on from here when more is written
        return b""


@functools.lru_cache(maxsize=256)
def _entries(attempt: int) -> re.Pattern[bytes]:
    """Whole lines as encode_lines writes them for `attempt`, and nothing else."""
    line = (rb'\{"timestamp":"' + _TIME + rb'","stream":"(?:stdout|stderr|system)","message":' + _STRING
            + rb',"attempt":' + str(int(attempt)).encode() + rb"\}\n")
    return re.compile(rb"(?:" + line + rb")*+")


def _valid_times(block: bytes) -> bool:
    """Each February 29th of `block` (whose times match _TIME) is in a leap year."""
    if block.find(b"-02-29T") < 0:
        return True
    try:
        for ts in set(_TIMES.findall(block)):
            datetime.fromisoformat(ts[:-1].decode())
    except ValueError:
        return False
    return True


def _fits(block: bytes) -> bool:
    """True when `block` is valid UTF-8 and no line of it is longer than LINE_MAX (C-level finds:
    a longer line holds a whole aligned stretch of LINE_MAX/2 bytes without a newline)."""
    half = LINE_MAX // 2
    if len(block) > LINE_MAX and not all(block.find(b"\n", i, i + half) >= 0
                                         for i in range(0, len(block) - half + 1, half)):
        return False
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def clean_block(block: bytes, attempt: int) -> bytes:
    """`block` as a log may hold it: whole entries of `attempt`, messages cut at MAX_LOG_LINE
    bytes, no other field; a line that is no entry becomes a system line saying so. The daemon
    trusts no sender of a block (a job may have reached the dispatcher)."""
    if _entries(attempt).fullmatch(block) and _fits(block) and _valid_times(block):
        return block
    lines = block.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(_clean_line(line, attempt) for line in lines if line.strip())


def _clean_line(line: bytes, attempt: int) -> bytes:
    whole = line + b"\n"
    if _entries(attempt).fullmatch(whole) and len(whole) <= LINE_MAX and _fits(whole) and _valid_times(whole):
        return whole
    try:
        entry = json.loads(line)
        stream, message = entry["stream"], entry["message"]
        if stream not in STREAMS or not isinstance(message, str) or not isinstance(entry["timestamp"], str):
            raise ValueError("not a log entry")
        when = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
        t = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
        raw = message.encode("utf-8", "replace")
        return encode_lines([(t, stream, cut_line(raw) if len(raw) > MESSAGE_MAX else message, attempt)])
    except (ValueError, TypeError, KeyError, OverflowError, OSError, RecursionError):
        return encode_lines([(time.time(), "system",
                              f"[sage-ops: a log line of {len(line)} bytes was dropped: not a log entry]", attempt)])


def _attempt_end(attempt: int) -> bytes:
    """How each line of `attempt` ends (a message cannot hold it: its quotes are escaped)."""
    return b',"attempt":%d}' % int(attempt)


def only_attempt(block: bytes, attempt: int) -> bytes:
    """The lines of `block` (whole entries) that `attempt` wrote; all of it, at memory speed,
    when they all are."""
    end = _attempt_end(attempt) + b"\n"
    if block.count(end) == block.count(b"\n"):
        return block
    return b"".join(line + b"\n" for line in block.split(b"\n") if line.endswith(end[:-1]))


def _tail_start(fd: int, size: int, n: int, end: bytes | None = None) -> int:
    """Where the last `n` complete lines start (of those ending with `end`, if given), found
    reading back from the end."""
    pos, seen = size, 0
    while pos > 0:
        start = max(0, pos - READ_BLOCK)
        chunk = os.pread(fd, pos - start, start)
        at = len(chunk)
        while (at := chunk.rfind(b"\n", 0, at)) >= 0:
            if seen == n:  # it ends the line before the n counted ones
                return start + at + 1
            # the first one ends the last complete line
            if end is None or (chunk[at - len(end):at] if at >= len(end) else
                               os.pread(fd, len(end), max(0, start + at - len(end)))) == end:
                seen += 1
        pos = start
    return 0


def _cut_long_lines(block: bytes) -> bytes:
    """`block` with each line longer than LINE_MAX cut. Any such line holds a whole aligned
    stretch of LINE_MAX/2 bytes without a newline: that is checked with a few C-level finds, so
    a block of ordinary lines is returned as it is, at memory speed."""
    half = LINE_MAX // 2
    if len(block) <= LINE_MAX or all(block.find(b"\n", i, i + half) >= 0
                                     for i in range(0, len(block) - half + 1, half)):
        return block
    return b"".join(_cut_line(ln[:LINE_MAX], ln[-64:], len(ln)) if len(ln) > LINE_MAX else ln + b"\n"
                    for ln in block[:-1].split(b"\n"))


def _cut_line(head: bytes, tail: bytes, size: int) -> bytes:
    """A stored line of `size` bytes, known by its first bytes and its last, as one valid entry:
    its time, stream, attempt and the start of its message when it is in this format, else a note."""
    frame, attempt = _FRAME.match(head), _ATTEMPT.search(tail)
    if frame is None or attempt is None:
        return encode_lines([(time.time(), "system", f"[sage-ops: a log line of {size} bytes was cut: not a log entry]",
                              0)])
    body, text = head[frame.end():][:MAX_LOG_LINE], None
    for trim in range(8):  # an escape or a UTF-8 character may be cut in the middle
        try:
            text = json.loads(b'"' + body[: len(body) - trim] + b'"')
            break
        except ValueError:
            continue
    try:
        t = datetime.fromisoformat(frame.group(1).decode().replace("Z", "+00:00")).timestamp()
    except ValueError:
        t = time.time()
    return encode_lines([(t, frame.group(2).decode(), f"{text or ''} … [line cut at read: {size} bytes]",
                          int(attempt.group(1)))])


def _convert(block: bytes) -> bytes:
    """Lines of the older format ({"t": epoch, "s", "m", "a"}) as today's; others as they are."""
    out = []
    for line in block.split(b"\n"):
        if line.startswith(LEGACY):
            d = json.loads(line)
            out.append(encode_lines([(d["t"], d["s"], d["m"], d.get("a", 1))]))
        elif line.strip():
            out.append(line + b"\n")
    return b"".join(out)


async def _maybe_await(value: object) -> object:
    if asyncio.iscoroutine(value):
        return await value
    return value

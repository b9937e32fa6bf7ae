"""Job log artifacts under storage.path, kept by the daemon so they outlive the Ray worker.

One file per job, in the API's own wire format: NDJSON `LogEntry` lines (timestamp, stream,
message, attempt) as job_output.encode_lines writes them, on the job's worker. The daemon appends
the blocks it receives, and serves readers raw blocks of the file: no line is parsed or encoded
again on the way, however many follow one job. Files of older versions ({"t","s","m","a"} lines)
are still served, converted line by line.

Followers wait on a per-job event that is woken by every append and by the job's end; they ask
for the job's state only when it may have changed (`wake`), not once per block.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

from ..schemas import LogEntry
from .job_output import encode_lines

READ_BLOCK = 1024 * 1024  # bytes per read of a follower (cut at its last complete line)
LEGACY = b'{"t":'  # how a line of the older format starts


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._waiters: dict[str, asyncio.Event] = {}  # set by every append and every `wake`
        self._following: dict[str, int] = {}  # job -> its followers
        self._changes: dict[str, int] = {}  # job -> `wake`s while it has followers

    def path(self, job_id: str) -> Path:
        return self.root / job_id[:2] / f"{job_id}.log"

    def append_bytes(self, job_id: str, data: bytes) -> None:
        """Whole encoded lines (job_output.encode_lines), as the runner sent them: one write."""
        if data:
            self._write(job_id, [data])
            self._notify(job_id)

    async def append_blocks(self, blocks: Iterable[tuple[str, bytes]]) -> None:
        """A poll's worth of blocks (job id, data), in order: written in a worker thread, so the
        event loop serves followers meanwhile (writing 1 GB costs seconds where page cache memory
        is slow to get), then their followers are woken."""
        by_job: dict[str, list[bytes]] = {}
        for job_id, data in blocks:
            if data:
                by_job.setdefault(job_id, []).append(data)
        if by_job:
            await asyncio.to_thread(lambda: [self._write(job_id, parts) for job_id, parts in by_job.items()])
            for job_id in by_job:
                self._notify(job_id)

    def _write(self, job_id: str, parts: list[bytes]) -> None:
        path = self.path(job_id)
        path.parent.mkdir(exist_ok=True)
        with path.open("ab") as f:
            f.writelines(parts)  # each part its own write: no copy into one buffer

    def append(self, job_id: str, lines: Iterable[tuple[float, str, str, int]]) -> None:
        """lines: (timestamp, stream, message, attempt)."""
        self.append_bytes(job_id, encode_lines(lines))

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
        with _Reader(self.path(job_id), offset) as reader:
            data = b"".join(iter(reader.block, b""))
            return [LogEntry.model_validate_json(line) for line in data.split(b"\n") if line], reader.offset

    def blocks(self, job_id: str, tail: int | None = None) -> Iterator[bytes]:
        """The log as it is now, in blocks of whole NDJSON lines (the last `tail` lines only)."""
        with _Reader(self.path(job_id), tail=tail) as reader:
            end = reader.size()
            while block := reader.block(end):
                yield block

    async def follow(self, job_id: str, is_done: Callable[[], object], tail: int | None = None,
                     poll: float = 1.0) -> AsyncIterator[bytes]:
        """Every line in blocks of whole NDJSON lines, then new ones as they come, until the job
        has ended and all are read.

        The job's state is asked when the follower has read all there is, and only if it may have
        changed since it was last asked (a `wake`, or `poll` seconds without news).
        """
        self._following[job_id] = self._following.get(job_id, 0) + 1
        try:
            with _Reader(self.path(job_id), tail=tail) as reader:
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
        finally:
            left = self._following.pop(job_id) - 1
            if left:
                self._following[job_id] = left
            else:
                self._changes.pop(job_id, None)


class _Reader:
    """Blocks of whole lines of one job's log from an offset (the file may not exist yet)."""

    def __init__(self, path: Path, offset: int = 0, tail: int | None = None) -> None:
        self.path, self.offset, self.tail = path, offset, tail
        self.fd: int | None = None
        self.legacy: bool | None = None  # unknown until the file has a first line

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
                self.offset = _tail_start(self.fd, os.fstat(self.fd).st_size, self.tail)
        if self.legacy is None:
            head = os.pread(self.fd, len(LEGACY), 0)
            if len(head) == len(LEGACY):
                self.legacy = head == LEGACY
        return True

    def size(self) -> int:
        return os.fstat(self.fd).st_size if self._open() and self.fd is not None else 0

    def block(self, end: int | None = None) -> bytes:
        """The next whole lines (about READ_BLOCK bytes, up to `end`), or b"" if none are there yet."""
        if not self._open() or self.fd is None:
            return b""
        room = float("inf") if end is None else end - self.offset
        want = int(min(READ_BLOCK, room))
        while want > 0:
            data = os.pread(self.fd, want, self.offset)
            cut = data.rfind(b"\n") + 1
            if cut:
                self.offset += cut
                return _convert(data[:cut]) if self.legacy else data[:cut]
            if len(data) < want or want >= room:  # an unfinished line: wait for the rest
                return b""
            want = int(min(want * 2, room))  # a line longer than a block (not written by this version)
        return b""


def _tail_start(fd: int, size: int, n: int) -> int:
    """Where the last `n` complete lines start, found reading back from the end."""
    pos, seen = size, 0
    while pos > 0:
        start = max(0, pos - READ_BLOCK)
        chunk = os.pread(fd, pos - start, start)
        at = len(chunk)
        while (at := chunk.rfind(b"\n", 0, at)) >= 0:
            seen += 1  # the first one ends the last complete line; the (n+1)th ends the line before them
            if seen == n + 1:
                return start + at + 1
        pos = start
    return 0


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

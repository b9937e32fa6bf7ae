"""A job's log in the shared store (storage.url, blobs.BlobStore), for LogStore (logs.py),
whose local file is then a cache: what is appended is uploaded every storage.flush_interval
(`flush`) as blocks of whole lines named by the byte range they hold ("logs/ab/JOB/START-END"),
and a log this daemon has not brought level with the store in its term (after a failover, on a
standby, on a new machine) is first completed from it (`sync`). A leader killed loses at most the
lines of its last interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .blobs import BlobStore

log = logging.getLogger("sage_ops.logs")

UPLOAD_MAX = 8 * 1024 * 1024  # bytes of one uploaded block at most
WARN_EVERY = 60.0  # seconds between two warnings of failed uploads
REMEMBERED = 100_000  # jobs whose upload state is kept in memory (the oldest half is forgotten past it)


def _prefix(job_id: str) -> str:
    return f"logs/{job_id[:2]}/{job_id}"


class LogShipping:
    """`path` is where LogStore keeps a job's log; `lock` is held by its writes, so a sync and a
    write of the same file never interleave."""

    def __init__(self, remote: BlobStore, path: Callable[[str], Path], lock: threading.Lock) -> None:
        self.remote, self.path, self.lock = remote, path, lock
        self.leading = True  # False on a standby: another daemon appends, so reads ask the store each time
        self._shipped: dict[str, int] = {}  # job -> bytes of its log the store holds
        self._synced: dict[str, None] = {}  # jobs brought level with the store in this term (in order)
        self._dirty: set[str] = set()  # jobs appended to since their last upload
        self._warned = -WARN_EVERY  # when an upload failure was last logged
        self.last_error: str | None = None  # why the last upload failed (None: it did not), for health

    def written(self, job_id: str) -> None:
        """LogStore appended to the job's log (under `lock`): it goes up at the next flush."""
        self._dirty.add(job_id)

    def remove(self, job_id: str) -> None:
        """Retention: the job's blocks, and what is remembered of them (blocking: a worker thread)."""
        self._dirty.discard(job_id)
        self._shipped.pop(job_id, None)
        self._synced.pop(job_id, None)
        self.remote.delete(self.remote.keys(_prefix(job_id)))

    def lead(self, leading: bool = True) -> None:
        """This daemon leads (or no longer does): what another daemon appended meanwhile is read
        from the store before this one appends or serves."""
        self.leading = leading
        self._synced.clear()

    def fresh(self, job_id: str) -> None:
        """The job's first attempt starts: the store holds nothing of its log, none need be asked
        (a LIST per job would bound the jobs a leader starts per second)."""
        if self.leading and job_id not in self._synced:
            self._shipped.setdefault(job_id, 0)  # what is here (notes) goes up with its first lines
            self._mark_synced(job_id)

    def _mark_synced(self, job_id: str) -> None:
        self._synced[job_id] = None
        if len(self._synced) > REMEMBERED:
            for old in list(self._synced)[: REMEMBERED // 2]:
                self._synced.pop(old, None)
                self._shipped.pop(old, None)

    def sync(self, job_id: str) -> None:
        """Bring the local file level with the store: the blocks past its end are appended
        (blocking: call it in a worker thread). A leader does it once per job and term."""
        if self.leading and job_id in self._synced:
            return
        keys = self.remote.keys(_prefix(job_id))
        path = self.path(job_id)
        with self.lock:
            size = path.stat().st_size if path.exists() else 0
            stored = 0
            for key in keys:
                start, _, end = key.rsplit("/", 1)[-1].partition("-")
                if not (start.isdigit() and end.isdigit()):
                    continue
                begin, stop = int(start), int(end)
                if stop > size:
                    data = self.remote.get(key)[max(0, size - begin):]
                    path.parent.mkdir(exist_ok=True)
                    with path.open("ab") as f:
                        f.write(data)
                    size += len(data)
                stored = max(stored, stop)
            self._shipped[job_id] = min(stored, size)
            if size > stored:
                self._dirty.add(job_id)  # lines of ours the store never got: they go up next
            self._mark_synced(job_id)

    def flush(self) -> int:
        """Upload what was appended since the last flush, in blocks of whole lines, many at once
        (blocking: a worker thread). Returns the bytes uploaded; a store that fails keeps them
        for the next flush."""
        sent = 0
        batch: list[tuple[str, int, str, bytes]] = []  # (job, its end once sent, key, data)
        dirty = list(self._dirty)
        for n, job_id in enumerate(dirty):
            self._dirty.discard(job_id)
            batch += self._pending(job_id)
            if sum(len(b[3]) for b in batch) >= UPLOAD_MAX * 4 or n == len(dirty) - 1:
                if not self._send(batch):
                    self._dirty.update(dirty[n + 1:])
                    break
                sent += sum(len(b[3]) for b in batch)
                batch = []
        return sent

    def _pending(self, job_id: str) -> list[tuple[str, int, str, bytes]]:
        """The blocks of `job_id`'s log the store lacks."""
        start, out = self._shipped.get(job_id, 0), []
        try:
            fd = os.open(self.path(job_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # removed meanwhile (retention)
            return []
        try:
            while True:
                data = os.pread(fd, UPLOAD_MAX, start)
                data = data[: data.rfind(b"\n") + 1]
                if not data:
                    return out
                out.append((job_id, start + len(data), f"{_prefix(job_id)}/{start:016d}-{start + len(data):016d}",
                            data))
                start += len(data)
        finally:
            os.close(fd)

    def _send(self, batch: list[tuple[str, int, str, bytes]]) -> bool:
        if not batch:
            return True
        try:
            self.remote.put_many({key: data for _, _, key, data in batch})
        except Exception as exc:  # noqa: BLE001 - the store's own errors: retried next flush
            self._dirty.update(job_id for job_id, *_ in batch)
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) \
                else type(exc).__name__
            if time.monotonic() - self._warned > WARN_EVERY:  # a store that is down: a line a minute, not a second
                self._warned = time.monotonic()
                log.warning("could not upload %d log blocks to %s (kept here, retried): %s", len(batch),
                            self.remote.url, self.last_error)
            return False
        self.last_error = None
        for job_id, end, _, _ in batch:
            self._shipped[job_id] = max(self._shipped.get(job_id, 0), end)
        return True

    def backlog(self) -> int:
        """Jobs whose newest lines are not in the store yet."""
        return len(self._dirty)

    async def uploading(self, interval: float) -> None:
        """Upload new lines every `interval` seconds, for the daemon's life."""
        while True:
            await asyncio.sleep(interval)
            if self._dirty:
                await asyncio.to_thread(self.flush)

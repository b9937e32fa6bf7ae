"""How the daemon's process holds memory: the collector's thresholds, glibc's malloc tuning, and
giving back what a big request freed. All of it measured (docs/performance.md, issue 28)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters
MMAP_THRESHOLD = 256 * 1024
ARENAS = 2
YOUNG = 10_000  # net new container objects between two collections of the youngest generation
BIG = 1000  # jobs in one request: past this, what it freed is given back to the system
BIG_STREAM = 64 * 1024 * 1024  # bytes one response streamed (a log followed): past this, the same


def tune_gc() -> None:
    """The daemon keeps every queued job in memory; with the default thresholds a 50,000-job batch
    set off full collections that walk all of them again and again (measured: more than half of a
    batch's validation time). Scan the older generations rarely, and never rescan what the imports
    made (gc.freeze).

    The youngest generation is still collected every YOUNG allocations: reference cycles (each
    SQLAlchemy statement the daemon builds is one) are freed only by a collection, and up to YOUNG
    container objects of them wait for it. At 100,000 that was ~18 MB, which took a steady load 27
    minutes to reach: the soak's RSS grew for 27 minutes, then stopped (docs/performance.md, Soak)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, 50, 100)


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_malloc() -> None:
    """The daemon handles log blocks of up to 4 MiB; glibc's dynamic threshold then serves such
    buffers from its heap, where freed ones are not returned (measured: +70-100 MB of RSS after
    one 512 MiB log, kept). A fixed threshold keeps big buffers in their own mappings, returned on
    free; two arenas instead of one per thread that allocated. glibc only (elsewhere a no-op)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    libc.mallopt(M_ARENA_MAX, ARENAS)


class GiveBack:
    """After a request of many jobs (a 50,000-job batch holds 2.7 KB per job while it is checked),
    glibc keeps the freed pages inside its heap: `malloc_trim` returns them (measured: 100 MB after
    two such batches). In a thread, one at a time, never making the request wait."""

    def __init__(self, trim: Callable[[int], Any] | None = None) -> None:
        """`trim`: glibc's malloc_trim unless given (None elsewhere: nothing to do)."""
        libc = _libc() if trim is None else None
        self._trim = trim or (getattr(libc, "malloc_trim", None) if libc is not None else None)
        self._running: asyncio.Task[Any] | None = None

    def after(self, jobs: int) -> None:
        """A request touched `jobs` jobs: give back what it freed if it was big."""
        if jobs >= BIG:
            self._start()

    def after_stream(self, sent: int) -> None:
        """A response streamed `sent` bytes: its blocks (each under the mmap threshold, so from
        the heap) are freed, and 50 log followers left ~40 MB there (measured)."""
        if sent >= BIG_STREAM:
            self._start()

    async def streamed(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks` as they are, then `after_stream` with their size (however the stream ended)."""
        sent = 0
        try:
            async for chunk in chunks:
                sent += len(chunk)
                yield chunk
        finally:
            self.after_stream(sent)

    def _start(self) -> None:
        if self._trim is None or (self._running is not None and not self._running.done()):
            return
        self._running = asyncio.get_running_loop().create_task(asyncio.to_thread(self._trim, 0))

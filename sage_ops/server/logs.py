"""Job log artifacts under storage.path, kept by the daemon so they outlive the Ray worker.

One NDJSON file per job: {"t": epoch, "s": stream, "m": message, "a": attempt}. Followers wait
on a per-job condition that is woken by every append and by the job's end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

from ..schemas import LogEntry
from .store import utc


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._waiters: dict[str, asyncio.Event] = {}

    def path(self, job_id: str) -> Path:
        return self.root / job_id[:2] / f"{job_id}.log"

    def append(self, job_id: str, lines: Iterable[tuple[float, str, str, int]]) -> None:
        """lines: (timestamp, stream, message, attempt)."""
        data = "".join(
            json.dumps({"t": t, "s": s, "m": m, "a": a}, ensure_ascii=False) + "\n" for t, s, m, a in lines
        )
        if not data:
            return
        path = self.path(job_id)
        path.parent.mkdir(exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(data)
        self.wake(job_id)

    def wake(self, job_id: str) -> None:
        ev = self._waiters.pop(job_id, None)
        if ev is not None:
            ev.set()

    def read(self, job_id: str, offset: int = 0) -> tuple[list[LogEntry], int]:
        """Entries from byte `offset` up to the last complete line, and the next offset."""
        path = self.path(job_id)
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        entries = [_entry(line) for line in data[:end].splitlines() if line]
        return entries, offset + end

    async def follow(self, job_id: str, is_done: Callable[[], object], tail: int | None = None,
                     poll: float = 1.0) -> AsyncIterator[LogEntry]:
        """Every line, then new ones as they come, until the job has ended and all are read."""
        entries, offset = self.read(job_id)
        if tail is not None:
            entries = entries[-tail:] if tail else []
        for e in entries:
            yield e
        while True:
            done = await _maybe_await(is_done())
            ev = self._waiters.setdefault(job_id, asyncio.Event())
            entries, offset = self.read(job_id, offset)
            for e in entries:
                yield e
            if done and not entries:
                return
            if not entries:
                try:
                    await asyncio.wait_for(ev.wait(), poll)
                except asyncio.TimeoutError:
                    pass


async def _maybe_await(value: object) -> object:
    if asyncio.iscoroutine(value):
        return await value
    return value


def _entry(line: bytes) -> LogEntry:
    d = json.loads(line)
    return LogEntry(timestamp=utc(d["t"]), stream=d["s"], message=d["m"], attempt=d.get("a", 1))

"""Retention: the leader deletes finished jobs older than `jobmanager.retention` (rows, results,
logs) in the background, a batch per transaction with a pause between batches, so the writer and
the API stay responsive while a backlog of millions drains; `sage-ops gc` runs a sweep now, or
counts what one would take. The rules of what goes are in storage/job_retention.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import anyio

from ...errors import Invalid
from ...retention import GcReport
from ...units import moment_text
from ..storage import job_retention as jr
from ..storage import package_use
from ..storage.accounts import add_audit

if TYPE_CHECKING:
    from ..storage.blobs import BlobStore
    from ..storage.logs import LogStore
    from ..storage.results import ResultStore
    from ..storage.store import Store
    from .leadership import Leadership

log = logging.getLogger(__name__)
EVERY = 600.0  # seconds between background sweeps (each drains all that is due)
FIRST = 60.0  # seconds after the daemon starts leading before the first one: start-up comes first
MIN_PAUSE = 0.05  # seconds between batches at least; else as long as the batch took (half the writer)
DRY_RUN_FACTOR = 10  # a dry run reads in batches this much larger: it deletes nothing


class Retention:
    def __init__(self, store: Store, logs: LogStore, leadership: Leadership, age: float | None, batch: int,
                 clock: Callable[[], float] = time.time, results: ResultStore | None = None,
                 blobs: BlobStore | None = None) -> None:
        """`blobs`: where shipped working directories are kept (those unused since the cutoff go)."""
        self.store, self.logs, self.leadership, self.results, self.blobs = store, logs, leadership, results, blobs
        self.age, self.batch, self.clock = age, batch, clock
        self._sweeping = asyncio.Lock()  # the loop's sweep and a `gc` never run at once

    async def run(self) -> None:
        """The background loop (only while this daemon leads, and only with a retention set)."""
        if self.age is None:
            return
        await asyncio.sleep(FIRST)
        while True:
            if self.leadership.is_leader:
                try:
                    await self.sweep(self.age, "retention")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - deposed, or the database is away: next time
                    log.warning("retention sweep stopped: %s", exc)
            await asyncio.sleep(EVERY)

    def _age(self, older_than: float | None) -> float:
        age = older_than if older_than is not None else self.age
        if age is None:
            raise Invalid("no age given and jobmanager.retention is not set: say how old a finished job must "
                          "be to go (gc --older-than 30d)")
        return age

    async def sweep(self, older_than: float | None, actor: str, dry_run: bool = False) -> GcReport:
        """Delete (or with `dry_run` only count) the finished jobs that ended more than
        `older_than` seconds ago (default: the configured retention)."""
        cutoff = self.clock() - self._age(older_than)
        report = GcReport(dry_run=dry_run, cutoff=_utc(cutoff), jobs=0, rows=0, log_bytes=0, kept=0, batches=0)
        cursor: jr.Cursor = {}
        async with self._sweeping:
            while True:
                started = time.monotonic()
                if dry_run:
                    batch = await self.store.read(functools.partial(jr.take, cutoff=cutoff, cursor=cursor,
                                                                    limit=self.batch * DRY_RUN_FACTOR))
                    freed = await anyio.to_thread.run_sync(self._log_bytes, batch.ids)
                else:
                    batch = await self.store.write(functools.partial(jr.expire, cutoff=cutoff, cursor=cursor,
                                                                     limit=self.batch, actor=actor, now=self.clock()))
                    freed = await anyio.to_thread.run_sync(self._remove_files, batch)
                _count(report, batch, freed)
                cursor = batch.cursor
                if batch.done:
                    break
                if not dry_run:
                    await asyncio.sleep(max(MIN_PAUSE, time.monotonic() - started))
            report.packages = await self._packages(cutoff, actor, dry_run)
        if dry_run:
            report.batches = -(-report.rows // self.batch)  # what the sweep itself would take
        if not dry_run and report.jobs:
            log.info("retention: deleted %d finished jobs (%d rows, %d log bytes) that ended before %s, in %d "
                     "batches; %d kept for unfinished jobs that wait for them", report.jobs, report.rows,
                     report.log_bytes, moment_text(cutoff), report.batches, report.kept)
        return report

    async def _packages(self, cutoff: float, actor: str, dry_run: bool) -> int:
        """Shipped working directories unused since `cutoff` that no unfinished job names: deleted
        (one audit record), or with `dry_run` counted."""
        if self.blobs is None:
            return 0
        blobs, gone = self.blobs, 0
        for sha, tenant in await asyncio.to_thread(package_use.stale, blobs, cutoff, not dry_run):
            if await self.store.read(functools.partial(package_use.wanted_by_a_job, sha256=sha, tenant=tenant)):
                continue
            if not dry_run:
                await asyncio.to_thread(package_use.remove, blobs, sha, tenant)
            gone += 1
        if gone and not dry_run:
            entry = {"time": self.clock(), "actor": actor[:100], "tenant": None, "action": jr.AUDIT_ACTION,
                     "target": f"{gone} packages", "status": 200,
                     "detail": f"deleted {gone} shipped working directories unused since {moment_text(cutoff)}"}
            await self.store.write(lambda c: add_audit(c, [entry]))
        return gone

    def _remove_files(self, batch: jr.Batch) -> int:
        """After a batch's commit: its jobs' logs and the results kept in the shared store (blocking:
        a thread). A crash before this leaves files nothing points to, never a row without its files."""
        if self.results is not None and batch.stored:
            self.results.remove(batch.stored)
        return self.logs.remove(batch.ids) if batch.ids else 0

    def _log_bytes(self, ids: Iterable[str]) -> int:
        """What deleting these jobs' logs would free here (a dry run: blocking, in a thread)."""
        total = 0
        for job_id in ids:
            with contextlib.suppress(FileNotFoundError):
                total += self.logs.path(job_id).stat().st_size
        return total


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def _count(report: GcReport, batch: jr.Batch, freed: int) -> None:
    """Add one batch to the sweep's report."""
    report.jobs += batch.jobs
    report.rows += len(batch.ids)
    report.log_bytes += freed
    report.kept += batch.kept
    report.batches += 1 if batch.ids else 0
    if batch.oldest is not None and batch.newest is not None:
        oldest, newest = _utc(batch.oldest), _utc(batch.newest)
        report.oldest_ended = oldest if report.oldest_ended is None else min(report.oldest_ended, oldest)
        report.newest_ended = newest if report.newest_ended is None else max(report.newest_ended, newest)

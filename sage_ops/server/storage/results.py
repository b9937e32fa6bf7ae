"""Jobs' results: a small one in its job's row, a larger one (over storage.inline_result_bytes)
in the shared store (blobs.BlobStore, "results/ab/JOB.json") with a mark in the row.

Rows stay small however big results get (a 64 MiB result would otherwise travel with every read
of its row and every PostgreSQL replica), and every daemon of the database reads the same result.
The mark is no JSON (`STORED`), so no result a job writes can pass for one, and the key is made
from the job's id, never read from the row.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...lifecycle import Transition
    from .blobs import BlobStore

STORED = "stored:v1"  # the row's `result` when the result is in the store


class ResultStore:
    def __init__(self, blobs: BlobStore, inline_max: int) -> None:
        self.blobs, self.inline_max = blobs, inline_max

    @staticmethod
    def key(job_id: str) -> str:
        return f"results/{job_id[:2]}/{job_id}.json"

    async def offload(self, moves: list[Transition]) -> list[Transition]:
        """Before a batch of transitions is committed: each result over the inline limit is
        written to the store, and its transition sets the mark instead (durable before the row
        says so). The transitions, those changed replaced."""
        big = {t.job_id: t.fields["result"] for t in moves
               if isinstance(t.fields.get("result"), str) and len(t.fields["result"]) > self.inline_max}
        if not big:
            return moves

        def put() -> None:
            for job_id, text in big.items():
                self.blobs.put(self.key(job_id), text.encode())

        await asyncio.to_thread(put)
        return [t._replace(fields={**t.fields, "result": STORED}) if t.job_id in big and "result" in t.fields else t
                for t in moves]

    async def load(self, job_id: str, raw: str | None) -> Any:
        """The result a row holds (its JSON text, the mark, or None), as the job wrote it."""
        if raw is None:
            return None
        if raw != STORED:
            return json.loads(raw)
        try:
            data = await asyncio.to_thread(self.blobs.get, self.key(job_id))
        except FileNotFoundError:
            return None  # removed by retention meanwhile
        return json.loads(data)

    def remove(self, job_ids: Iterable[str]) -> None:
        """Retention: these jobs' stored results (blocking: a worker thread)."""
        self.blobs.delete(self.key(j) for j in job_ids)

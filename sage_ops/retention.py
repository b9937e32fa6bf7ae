"""API shapes of retention (`POST /v1/gc`, `sage-ops gc`): what a sweep is asked to do and what it
did, or with a dry run would do. Shared by the server, the client and the CLI's --json."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from .schemas import Strict
from .views import View


class GcRequest(Strict):
    older_than: float | None = Field(None, gt=0, description="seconds since a job ended; default: the "
                                     "daemon's jobmanager.retention")
    dry_run: bool = Field(False, description="only count what would go")


class GcReport(View):
    dry_run: bool
    cutoff: datetime = Field(description="jobs that ended before this go")
    jobs: int = Field(description="finished jobs deleted (or that would be); an array counts once")
    rows: int = Field(description="job rows deleted, its tasks included")
    log_bytes: int = Field(description="bytes of their logs on this daemon's disk")
    kept: int = Field(description="old enough, but kept: an unfinished job waits for them")
    batches: int = Field(description="transactions (one audit record each)")
    packages: int = Field(0, description="shipped working directories deleted (or that would be): unused "
                          "since the cutoff, and no unfinished job names them")
    oldest_ended: datetime | None = None
    newest_ended: datetime | None = None

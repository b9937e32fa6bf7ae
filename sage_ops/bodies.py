"""The bodies of the requests beyond a single submit: a batch, the filter of a listing or a bulk
action, an update or a priority change. Strict like the job spec (schemas.py), kept apart from it
because they change with the API's operations, not with what a job is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

from .lifecycle import JobStatus
from .schemas import JobSpec, Strict


class BatchSubmit(Strict):
    jobs: list[JobSpec] = Field(min_length=1, max_length=100_000)


class JobFilter(Strict):
    """Which jobs a bulk operation or a listing touches: every given field must match."""

    status: list[JobStatus] = Field(default_factory=list)
    name: str | None = Field(None, max_length=256, description="text anywhere in the name, or a glob over "
                             "the whole name when it has * ? or [; case-insensitive")
    tenant: str | None = Field(None, max_length=64)
    since: datetime | None = Field(None, description="created at or after")
    until: datetime | None = Field(None, description="created before")
    array: str | None = Field(None, max_length=20, description="the tasks of this array (without it, arrays "
                              "are one job each and their tasks are left out)")
    arrays: bool = Field(False, description="only array jobs")

    def is_empty(self) -> bool:
        return not (self.status or self.name or self.tenant or self.since or self.until or self.array
                    or self.arrays)


class BatchCancel(Strict):
    """Ids, or a filter (never neither: an empty filter would touch every job)."""

    ids: list[str] = Field(default_factory=list, max_length=100_000)
    filter: JobFilter | None = None
    dry_run: bool = Field(False, description="report what would be touched (in `affected`), touch nothing")

    @model_validator(mode="after")
    def _one(self) -> BatchCancel:
        if bool(self.ids) == bool(self.filter and not self.filter.is_empty()):
            raise ValueError("give either `ids` or a non-empty `filter`")
        return self


class JobUpdate(Strict):
    """What `update` changes while a job waits (SUBMITTED or PENDING); what is left out stays. The
    result is checked as a whole spec is at submit, and dependencies as at submit (known, the
    caller's tenant's, no cycle)."""

    priority: int | None = None
    timeout: float | str | None = Field(None, description="seconds, or '90s', '15m', '1h'")
    begin_at: float | str | None = Field(None, description="as JobSpec.begin_at")
    resources: dict[str, Any] | None = Field(None, description="merged into the job's: {cpu: 2} keeps its memory")
    dependencies: list[str] | None = None
    after_notok: list[str] | None = None
    after_any: list[str] | None = None
    throttle: int | None = Field(None, ge=1, le=1_000_000, description="an array's tasks at once; its running "
                                 "tasks go on, no new one starts beyond it")

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class BatchRetry(BatchCancel):
    with_dependents: bool = Field(False, description="also the jobs these jobs' failure cancelled (and theirs), "
                                  "which wait for them again")
    failed: bool = Field(False, description="an array: only its tasks that did not complete (without it, all)")


class PriorityChange(Strict):
    priority: int = Field(ge=-1_000_000, le=1_000_000)

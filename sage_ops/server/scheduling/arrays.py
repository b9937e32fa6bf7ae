"""Job arrays in the queue: an array is one row and one entry in memory until its tasks' turn
comes. Its tasks are made (rows written, queued as ordinary jobs) a window at a time, as
HTCondor's `max_materialize` does: at most its throttle (%N), else `jobmanager.array_window`,
exist unfinished at once, so a 100,000-task array costs a few rows until its tasks run. When the
last task ends, the array ends: COMPLETED if every task did, FAILED if one failed, else
CANCELLED; its dependents then go on as after any job."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from ...arrays import Indices, task_fields, task_id
from ...lifecycle import JobStatus, transition
from ...schemas import JobSpec
from ..storage import store as st
from .queue_items import ArrayRun, Queued
from .queue_state import TermPart

S = JobStatus


def size(spec: JobSpec) -> int:
    """How many seqs a job takes: an array's tasks each take one."""
    return len(Indices.parse(spec.array.indices)) if spec.array is not None else 1


def task_rows(run: ArrayRun, spec_json: dict[str, Any], positions: range, now: float
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Queued]]:
    """The rows, audit events and queue entries of the tasks at `positions`."""
    rows, events, queued = [], [], []
    array = run.job
    for pos in positions:
        index = run.indices.nth(pos)
        tid = task_id(array.id, index)
        fields = task_fields(spec_json, array.id, index)
        spec = JobSpec.model_validate(fields)
        rows.append(st.new_job_row(id=tid, seq=run.first_seq + pos, name=spec.display_name(), tenant=spec.tenant,
                                   status=S.PENDING.value, reason=None, priority=array.priority,
                                   kind=spec.kind.value, spec=spec.model_dump_json(), created_at=now, updated_at=now,
                                   array_id=array.id, array_index=index))
        events.append(st.event_row(transition(tid, None, S.SUBMITTED, f"task {index} of array {array.id}"), now))
        events.append(st.event_row(transition(tid, S.SUBMITTED, S.PENDING, "admitted"), now))
        queued.append(Queued(tid, run.first_seq + pos, spec, S.PENDING, priority=array.priority))
    return rows, events, queued


@dataclass(eq=False)
class Arrays(TermPart):
    """Makes the tasks whose turn has come, in one write per dispatch pass."""

    async def top_up(self) -> None:
        state = self.state
        due, state.arrays_due = state.arrays_due, set()
        window = self.cfg.jobmanager.array_window
        now = self.clock.now()
        rows: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        made: list[tuple[ArrayRun, list[Queued]]] = []
        for array_id in due:
            run = state.arrays.get(array_id)
            if run is None or not self.ready(run):
                continue
            n = run.room(window)
            if n == 0:
                continue
            spec_json = json.loads(run.job.spec.model_dump_json())
            r, e, q = task_rows(run, spec_json, range(run.made, run.made + n), now)
            rows += r
            events += e
            made.append((run, q))
        if not rows:
            return

        def op(conn: Connection) -> None:
            st.insert_jobs(conn, rows, events, [])

        await self.store.write(op)  # durable before a task can start
        for run, tasks in made:
            run.made += len(tasks)
            for task in tasks:
                run.active.add(task.id)
                state.queued[task.id] = task
                state.active += 1
                state.queue(task)

    def ready(self, run: ArrayRun) -> bool:
        """May the array make tasks now? Not while held, waiting, before its begin time, or gone."""
        job, state = run.job, self.state
        return (job.id in state.queued and not job.held and not state.waiting.is_waiting(job.id)
                and job.id not in state.stuck and not (job.not_before and job.not_before > self.clock.now()))


async def load_runs(store: st.Store, arrays: list[Queued]) -> dict[str, ArrayRun]:
    """The unfinished arrays as the database holds them: tasks made, those not ended, outcomes."""
    if not arrays:
        return {}
    ids = [a.id for a in arrays]

    def q(conn: Connection) -> dict[str, list[tuple[str, str]]]:
        return st.array_tasks(conn, ids)

    tasks = await store.read(q)
    out = {}
    for a in arrays:
        assert a.spec.array is not None
        run = ArrayRun(a, Indices.parse(a.spec.array.indices))
        mine = tasks.get(a.id, [])
        run.made = len(mine)
        run.active = {t for t, s in mine if s not in ENDED}
        run.failed = sum(s in (S.FAILED.value, S.REJECTED.value) for _, s in mine)
        run.cancelled = sum(s == S.CANCELLED.value for _, s in mine)
        run.started = any(s != S.PENDING.value for _, s in mine)
        out[a.id] = run
    return out


ENDED = frozenset({S.COMPLETED.value, S.FAILED.value, S.CANCELLED.value, S.REJECTED.value})

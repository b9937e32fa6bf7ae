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
from ..storage import job_arrays
from ..storage import store as st
from .outcomes import Outcomes
from .queue_items import ArrayRun, Queued
from .queue_state import TermPart

S = JobStatus


def size(spec: JobSpec) -> int:
    """How many seqs a job takes: an array's tasks each take one."""
    return len(Indices.parse(spec.array.indices)) if spec.array is not None else 1


def corr_deps(conn: Connection, state_arrays: dict[str, ArrayRun], corr: list[str], index: int,
              specs: dict[str, Indices | None]) -> list[str] | None:
    """What task `index` of an array `--after-corr` the arrays `corr` waits for: each one's task of
    the same index (none where it has no such index), or the array itself when that task was never
    made (it ended first); None while one of those tasks is yet to be made."""
    deps = []
    for other in corr:
        if other not in specs:
            row = job_arrays.spec_of(conn, other)
            array = JobSpec.model_validate_json(row).array if row else None
            specs[other] = Indices.parse(array.indices) if array else None
        indices = specs[other]
        pos = indices.position(index) if indices is not None else None
        if pos is None:
            continue
        run = state_arrays.get(other)
        if run is not None and pos >= run.made:
            return None  # its turn has not come in the other array yet
        made = run is not None or st.current_status(conn, task_id(other, index)) is not None
        deps.append(task_id(other, index) if made else other)
    return deps


def task_rows(conn: Connection, run: ArrayRun, state_arrays: dict[str, ArrayRun], n: int, now: float
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[Queued]]:
    """The rows, audit events, dependency edges and queue entries of the array's next `n` tasks
    (fewer when an --after-corr array has not made its own yet)."""
    rows, events, edges, queued = [], [], [], []
    array = run.job
    whole = array.spec
    spec_json = json.loads(whole.model_dump_json())
    corr = whole.after_corr
    specs: dict[str, Indices | None] = {}
    for pos in range(run.made, run.made + n):
        index = run.indices.nth(pos)
        deps = corr_deps(conn, state_arrays, corr, index, specs) if corr else []
        if deps is None:
            break
        tid = task_id(array.id, index)
        spec = JobSpec.model_validate({**task_fields(spec_json, array.id, index), "dependencies": deps})
        stored = spec.stored()
        rows.append(st.new_job_row(id=tid, seq=run.first_seq + pos, name=spec.display_name(), tenant=spec.tenant,
                                   status=S.PENDING.value, reason=None, priority=array.priority,
                                   kind=spec.kind.value, spec=stored, created_at=now, updated_at=now,
                                   array_id=array.id, array_index=index))
        events.append(st.event_row(transition(tid, None, S.PENDING, f"task {index} of array {array.id}"), now))
        edges += [{"job_id": tid, "depends_on": d} for d in deps]
        queued.append(Queued.of(tid, run.first_seq + pos, spec, S.PENDING, priority=array.priority, stored=stored))
    return rows, events, edges, queued


@dataclass(eq=False)
class Arrays(TermPart):
    """Makes the tasks whose turn has come, in one write per dispatch pass."""

    outcomes: Outcomes

    async def top_up(self) -> None:
        state = self.state
        due, state.arrays_due = state.arrays_due, set()
        window = self.cfg.jobmanager.array_window
        now = self.clock.now()
        runs = [(run, n) for a in due if (run := state.arrays.get(a)) is not None and self.ready(run)
                and (n := run.room(window)) > 0]
        if not runs:
            return

        def op(conn: Connection) -> list[tuple[ArrayRun, list[Queued]]]:
            made = []
            for run, n in runs:
                rows, events, edges, tasks = task_rows(conn, run, state.arrays, n, now)
                st.insert_jobs(conn, rows, events, edges)
                made.append((run, tasks))
            return made

        made = await self.store.write(op)  # durable before a task can start
        for run, tasks in made:
            run.made += len(tasks)
            for task in tasks:
                run.active.add(task.id)
                state.queued[task.id] = task
                state.active += 1
            if run.after_corr and run.room(window):
                state.arrays_due.add(run.id)  # the rest as the other arrays make theirs
        await self.outcomes.enqueue([t for _, tasks in made for t in tasks])  # --after-corr ones wait

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
        return job_arrays.array_tasks(conn, ids)

    tasks = await store.read(q)
    out = {}
    for a in arrays:
        assert a.array is not None
        run = ArrayRun(a, Indices.parse(a.array.indices))
        mine = tasks.get(a.id, [])
        run.made = len(mine)
        run.active = {t for t, s in mine if s not in ENDED}
        run.failed = sum(s in (S.FAILED.value, S.REJECTED.value) for _, s in mine)
        run.cancelled = sum(s == S.CANCELLED.value for _, s in mine)
        run.started = any(s != S.PENDING.value for _, s in mine)
        out[a.id] = run
    return out


ENDED = frozenset({S.COMPLETED.value, S.FAILED.value, S.CANCELLED.value, S.REJECTED.value})

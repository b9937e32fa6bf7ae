"""What operators do to queued and finished jobs: cancel and retry (by ids or by filter, reported
as a BulkResult), change a waiting job's priority, and read a job's execution graph.

The operator's side of the queue, with its rules (what may be retried, when a priority may
change) stated once; what a cancel does to the queue is outcomes.py's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection

from ...arrays import array_of
from ...bodies import JobFilter, JobUpdate
from ...errors import Conflict, Invalid, NotFound, Rejected, SageOpsError
from ...lifecycle import ACTIVE, TERMINAL, JobStatus, amend, transition
from ...schemas import JobSpec, Resources
from ...units import moment_text
from ...views import BulkResult, GraphView, JobRef, JobView
from ..storage import job_arrays, job_graph
from ..storage import store as st
from .admission import later
from .arrays import load_runs
from .execution_graph import Node, graph_view, met
from .outcomes import Outcomes
from .queue_items import Queued
from .queue_state import TermPart

S = JobStatus
RETRYABLE = (S.FAILED, S.CANCELLED, S.COMPLETED)
WAITING = (S.SUBMITTED, S.PENDING)  # what hold and release act on


@dataclass(eq=False)
class Operations(TermPart):
    outcomes: Outcomes

    async def _select(self, ids: list[str], flt: JobFilter | None,
                      statuses: Iterable[JobStatus]) -> list[str]:
        if ids:
            return ids
        assert flt is not None
        return await self.store.read(lambda c: st.matching_ids(c, flt, statuses))

    async def cancel(self, ids: list[str], flt: JobFilter | None = None,
                     reason: str = "cancelled by user", dry_run: bool = False) -> BulkResult:
        """Cancel jobs by id (each one reported) or by filter (the active jobs that match).
        Idempotent, as `kubectl delete` of what is already gone should be for scripts: a job that
        has already ended is reported `unchanged`, not an error; an unknown id stays an error.
        `dry_run`: what it would cancel (`affected`), touching nothing."""
        targets = await self._select(ids, flt, ACTIVE)
        if dry_run:
            known = await self.store.read(lambda c: st.statuses_of(c, targets))
            plan: list[Any] = [NotFound(f"no such job: {j}") if j not in known else
                               j if known[j][0] in ACTIVE else Conflict(f"job {j} has ended") for j in targets]
            return await self._bulk_result(targets, plan, [])
        outcome, cascaded = await self.outcomes.cancel_ids(targets, reason, strict=True)
        return await self._bulk_result(targets, outcome, cascaded)

    async def _bulk_result(self, targets: list[str], outcome: list[Any], cascaded: list[str],
                           ended_ok: bool = True) -> BulkResult:
        """Per target: done (its id), or an error; with `ended_ok` (cancel), a Conflict on a job
        that has ended is no error but `unchanged`."""
        done = [r for r in outcome if isinstance(r, str)]
        conflicts = [j for j, r in zip(targets, outcome) if ended_ok and isinstance(r, Conflict)]
        refs = await self.store.read(lambda c: st.statuses_of(c, done + cascaded + conflicts))

        def ref(j: str) -> JobRef:
            return JobRef(id=j, name=refs[j][1], status=refs[j][0])

        unchanged = [j for j in conflicts if j in refs and refs[j][0] in TERMINAL]
        errors = [{"id": j, **r.to_body()["error"]} for j, r in zip(targets, outcome)
                  if isinstance(r, SageOpsError) and j not in unchanged]
        return BulkResult(affected=[ref(j) for j in done if j in refs],
                          cascaded=[ref(j) for j in cascaded if j in refs],
                          unchanged=[ref(j) for j in unchanged], errors=errors)

    async def retry(self, ids: list[str], flt: JobFilter | None = None, dry_run: bool = False,
                    with_dependents: bool = False, failed: bool = False) -> BulkResult:
        """A finished job again, as a new attempt (with its retry budget anew). Its dependencies
        must not have failed: retry those first. `with_dependents`: also the jobs its failure
        cancelled (and theirs), which wait for it again. `dry_run`: what it would retry, touching
        nothing."""
        targets = await self._select(ids, flt, (S.FAILED, S.CANCELLED) if flt and not flt.status else RETRYABLE)
        if with_dependents:
            targets += await self.store.read(
                lambda c: job_graph.descendants(c, targets, keep=job_graph.cancelled_by_dependency))
        again = (S.FAILED.value, S.CANCELLED.value) if failed else tuple(s.value for s in RETRYABLE)
        tasks = await self.store.read(lambda c: job_arrays.array_tasks(c, targets))  # an array's retry is its tasks'
        chosen = {a: [t for t, status in ts if status in again] for a, ts in tasks.items()}
        if failed:  # an array whose every task completed has nothing to retry
            targets = [j for j in targets if j not in chosen or chosen[j]]
        targets += [t for ts in chosen.values() for t in ts]
        now = self.clock.now()
        if dry_run:
            plan = await self.store.read(lambda c: _retryable(c, targets))
            return await self._bulk_result(targets, _ids(plan), [], ended_ok=False)

        def op(conn: Connection) -> list[Any]:
            out: list[Any] = []
            for job_id, row in zip(targets, _retryable(conn, targets)):
                if isinstance(row, SageOpsError):
                    out.append(row)
                    continue
                try:
                    tr = transition(job_id, S(row.status), S.PENDING, "retried by user", row.attempts_made, retry=True,
                                    retry_base=row.attempts_made, not_before=None, ended_at=None, exit_code=None,
                                    result=None, held=False)
                except Conflict as exc:
                    out.append(Conflict(f"{exc.message}: only a finished job can be retried"))
                    continue
                out.append(row if st.apply_transitions(conn, [tr], now)[0] else Conflict(f"job {job_id} changed"))
            return out

        outcome = await self.store.write(op)
        jobs = [Queued.of(r.id, r.seq, JobSpec.model_validate_json(r.spec), S.PENDING, r.attempts_made, r.attempts_made,
                          r.priority) for r in outcome if not isinstance(r, SageOpsError)]
        for job in jobs:
            self.state.active += 1
            self.state.queued[job.id] = job
        for row in outcome:  # a task of an array still running counts as unfinished again
            if not isinstance(row, SageOpsError) and (run := self.state.arrays.get(array_of(row.id) or "")):
                run.active.add(row.id)
                run.failed -= row.status in (S.FAILED.value, S.REJECTED.value)
                run.cancelled -= row.status == S.CANCELLED.value
        self.state.arrays.update(await load_runs(self.store, [j for j in jobs if j.array is not None]))
        await self.outcomes.enqueue(jobs)
        retried = {j.id for j in jobs}  # the jobs kept waiting for one of these wait for it again
        kept = [self.state.queued[j] for j, (dep, _) in self.state.stuck.items() if dep in retried]
        await self.outcomes.enqueue(kept)
        return await self._bulk_result(targets, _ids(outcome), [], ended_ok=False)

    async def hold(self, ids: list[str], flt: JobFilter | None = None, dry_run: bool = False) -> BulkResult:
        """Keep waiting jobs from starting until released (Slurm's hold): each stays PENDING,
        its reason `held by user`; its dependencies and begin time still count. Holding a held
        job changes nothing; a job that is running or has ended is an error saying so."""
        return await self._set_held(ids, flt, True, dry_run)

    async def release(self, ids: list[str], flt: JobFilter | None = None, dry_run: bool = False) -> BulkResult:
        """Let held jobs start again, in their place in the queue."""
        return await self._set_held(ids, flt, False, dry_run)

    def _pending_tasks(self, ids: Iterable[str]) -> list[str]:
        """The made tasks of the arrays among `ids` that wait (not handed to Ray): what acting on
        an array acts on besides the array itself, which makes its next tasks as told."""
        queued = self.state.queued
        return [t for j in ids if (run := self.state.arrays.get(j)) is not None for t in sorted(run.active)
                if t in queued and queued[t].status is S.PENDING]

    def _waits(self, job_id: str, status: JobStatus) -> bool:
        """Does it wait (may it be held, released, re-prioritised)? An array does while it has
        tasks to make, even once some run."""
        return status in WAITING or (status is S.RUNNING and job_id in self.state.arrays)

    async def _set_held(self, ids: list[str], flt: JobFilter | None, held: bool, dry_run: bool) -> BulkResult:
        targets = await self._select(ids, flt, WAITING)
        targets += self._pending_tasks(targets)
        word, now = "held" if held else "released", self.clock.now()

        def op(conn: Connection) -> list[str | SageOpsError]:
            out: list[str | SageOpsError] = []
            for job_id in targets:
                status = st.current_status(conn, job_id)
                if status is None:
                    out.append(NotFound(f"no such job: {job_id}"))
                elif not self._waits(job_id, status):
                    out.append(Conflict(f"job {job_id} is {status.value}: only a waiting job can be {word}"))
                else:
                    if not dry_run and st.get_job_row(conn, job_id).held is not held:
                        st.apply_transitions(conn, [amend(job_id, status, f"{word} by user", held=held)], now)
                    out.append(job_id)
            return out

        outcome = await (self.store.read(op) if dry_run else self.store.write(op))
        for job_id in [] if dry_run else [j for j in outcome if isinstance(j, str)]:
            job = self.state.queued.get(job_id)
            if job is None or job.held is held:
                continue
            job.held = held
            if not held and job.status is S.PENDING and not self.state.waiting.is_waiting(job_id) and not (
                    job.not_before and job.not_before > now):  # one in its backoff or begin wait is queued already
                self.state.queue(job)
        return await self._bulk_result(targets, list(outcome), [], ended_ok=False)

    async def update(self, job_id: str, upd: JobUpdate) -> JobView:
        """Change a waiting job's priority, timeout, begin time, resources or dependencies (Slurm's
        `scontrol update`). The new spec is checked as a whole, dependencies as at submit and
        against cycles; audited with what changed. The job then waits for what it now needs."""
        changes, now = upd.changes(), self.clock.now()
        if not changes:
            raise Invalid("nothing to change: give --priority, --timeout, --begin, resources or dependencies")
        throttle = changes.pop("throttle", None)
        nodes = self.outcomes.backend.node_totals()

        def op(conn: Connection) -> JobSpec:
            row = st.get_job_row(conn, job_id)
            status = JobStatus(row.status)
            if not (status in WAITING or (status is S.RUNNING and job_id in self.state.arrays and not changes)):
                raise Conflict(f"job {job_id} is {status.value}: only a waiting job can be updated"
                               + (" (an array's --throttle, while it runs)" if throttle else ""))
            old = JobSpec.model_validate_json(row.spec)
            data = old.model_dump()
            if throttle is not None:
                if old.array is None:
                    raise Invalid(f"job {job_id} is not an array: --throttle limits an array's tasks")
                data["array"]["throttle"] = throttle
            if "resources" in changes:
                changes["resources"] = {**data["resources"], **changes["resources"]}
            try:
                new = JobSpec.model_validate({**data, **changes})
            except ValidationError as exc:
                raise Invalid(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
            if why := self.state.capacity.never_fits(new.resources.as_ray(), nodes):
                raise Rejected(why)
            if new.waits_for() != old.waits_for():
                _check_dependencies(conn, job_id, row.tenant, new)
                job_graph.set_dependencies(conn, job_id, list(dict.fromkeys(new.waits_for())))
            said = ", ".join(f"{k} {_shown(k, getattr(old, k))} -> {_shown(k, getattr(new, k))}" for k in changes
                             if getattr(old, k) != getattr(new, k))
            if throttle is not None and old.array is not None:
                said = ", ".join(filter(None, [said, f"throttle {old.array.throttle or '-'} -> {throttle}"]))
            fields: dict[str, Any] = {"spec": new.stored(), "priority": new.priority}
            if "begin_at" in changes:
                fields["not_before"] = later(new, now)
            st.apply_transitions(conn, [amend(job_id, status, f"updated: {said or 'nothing new'}", **fields)], now)
            return new

        new = await self.store.write(op)
        job = self.state.queued.pop(job_id, None)  # out and in again: the tenant's tallies follow its new needs
        if job is None:
            return await self.store.read(lambda c: st.get_job(c, job_id))
        job.respec(new)
        if "begin_at" in changes:
            job.not_before = later(new, now)
        self.state.queued[job_id] = job
        self.state.waiting.forget(job_id)
        if job.status is S.PENDING:  # waits for what it now needs, as a recovered job does
            await self.outcomes.enqueue([job])
        return await self.store.read(lambda c: st.get_job(c, job_id))

    async def set_priority(self, job_id: str, priority: int) -> JobView:
        """A waiting job's priority; it takes its new place in the queue at once."""
        now = self.clock.now()

        def op(conn: Connection) -> JobView:
            status = st.current_status(conn, job_id)
            if status is None:
                raise NotFound(f"no such job: {job_id}")
            if not self._waits(job_id, status):
                raise Conflict(f"job {job_id} is {status.value}: a priority changes only while the job waits")
            old = st.get_job_row(conn, job_id).priority
            st.apply_transitions(conn, [amend(job_id, status, f"priority {old} -> {priority}", priority=priority)], now)
            return st.get_job(conn, job_id)

        tasks = self._pending_tasks([job_id])
        view = await self.store.write(op)
        for task in tasks:  # an array's: the tasks made and waiting too (the next are made with it)
            await self.set_priority(task, priority)
        job = self.state.queued.get(job_id)
        if job is not None:
            job.priority = priority
            if job.status is S.PENDING and not job.not_before and not self.state.waiting.is_waiting(job_id):
                self.state.queue(job)
        return view

    async def graph(self, job_id: str) -> GraphView:
        rows, edges = await self.store.read(lambda c: job_graph.graph_rows(c, job_id))
        nodes = {r.id: Node(r.id, r.name, S(r.status), [], r.started_at, r.ended_at, r.priority) for r in rows}
        for child, parent in edges:
            if child in nodes:
                nodes[child].deps.append(parent)
        view = graph_view(job_id, nodes, self.clock.now())
        view.pipeline = await self.store.read(lambda c: st.pipeline_of(c, job_id))
        return view


def _ids(outcome: list[Any]) -> list[Any]:
    """Rows as their ids, errors as they are: the shape _bulk_result reads."""
    return [r if isinstance(r, SageOpsError) else r.id for r in outcome]


def _shown(key: str, value: Any) -> str:
    """A spec field as an update's audit line says it."""
    if value is None or value == []:
        return "-"
    if isinstance(value, Resources):
        return value.model_dump_json(exclude_defaults=True)
    if key == "timeout":
        return f"{value:g}s"
    if key == "begin_at":
        return moment_text(value)
    return ",".join(value) if isinstance(value, list) else str(value)


def _check_dependencies(conn: Connection, job_id: str, tenant: str | None, spec: JobSpec) -> None:
    """New dependencies of a waiting job, checked as at submit (known, of its tenant, not already
    unmet) and against cycles (none of them may wait for this job, directly or not)."""
    owners: dict[str, str | None] = {}
    deps = spec.waits_for()
    known = st.statuses_of(conn, deps, owners)
    if (unknown := next((d for d in deps if d not in known or owners.get(d) != tenant), None)) is not None:
        raise Invalid(f"unknown dependency: {unknown}")
    below = {job_id, *job_graph.descendants(conn, [job_id])}
    if (loop := next((d for d in deps if d in below), None)) is not None:
        raise Invalid(f"cycle: {loop} waits for {job_id}, directly or not")
    if (bad := next((d for d in deps if met(spec.condition(d), known[d][0]) is False), None)) is not None:
        raise Conflict(f"dependency {bad} ended {known[bad][0].value}: the job could never start")


def _retryable(conn: Connection, targets: list[str]) -> list[Any]:
    """Per target, its row if it may be retried now, else the error that says why not: the one
    check of a retry and of its dry run. A dependency retried with it counts as waiting."""
    deps = job_graph.dependencies_of(conn, targets)
    known = st.statuses_of(conn, set(targets) | {d for ds in deps.values() for d in ds})
    retried = set(targets)
    out: list[Any] = []
    for job_id in targets:
        if job_id not in known:
            out.append(NotFound(f"no such job: {job_id}"))
            continue
        row = st.get_job_row(conn, job_id)
        if S(row.status) not in RETRYABLE:  # REJECTED (a bad spec) and active jobs
            out.append(Conflict(f"job {job_id} is {row.status}: only a finished job can be retried"))
            continue
        mine = deps.get(job_id, [])
        bad = next((d for d in mine if d not in known), None)
        if bad is None and mine:
            spec = JobSpec.model_validate_json(row.spec)
            bad = next((d for d in mine if d not in retried and met(spec.condition(d), known[d][0]) is False), None)
        if bad is not None:
            state = known[bad][0].value if bad in known else "gone"
            out.append(Conflict(f"job {job_id}: its dependency {bad} is {state}; retry it first"))
            continue
        out.append(row)
    return out

"""Admission: turning validated specs into job rows — the checks (queue size, tenant quotas,
resources that no node could ever hold) and dependency resolution (unknown, of another tenant,
already failed, already done, still running) — and `submit`, which runs them in one durable
transaction; also the admission of jobs submitted while Ray was away, once it is back.

The planning functions are pure: `submit` calls them inside the writer's transaction, so the
dependency statuses they see are exactly the ones committed before the new jobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from ...arrays import Indices
from ...errors import Invalid, NotFound, Rejected
from ...lifecycle import JobStatus, Transition, amend, is_terminal, transition
from ...schemas import Condition, JobSpec
from ...units import moment_text
from ..storage import job_arrays
from ..storage import store as st
from ..storage.sealing import Sealer
from . import arrays
from .execution_graph import GraphError, met, resolve_batch_names, topological_order
from .outcomes import KEPT, Outcomes, dependency_unmet
from .ports import Backend
from .queue_items import ArrayRun, Queued
from .queue_state import TermPart
from .quotas import never_within, share_of_queue, with_min_cpu

S = JobStatus


def new_job_id(seq: int) -> str:
    """The id of the job numbered `seq`: its seq in hex (six digits or more), then six random ones.

    Consecutive jobs get neighbouring ids, so a batch's rows and audit rows go to the end of the
    id indexes, not to random pages across them: 50,000 jobs into a store of 1M went in at 58k
    rows/s where random ids went in at 29k, and fell from 54k to 29k as the store grew. Two jobs
    never share an id (fully random ones could: 1 in ~5,000 batches of 50,000 at 1M jobs failed
    on it), and the random half keeps the next job's id from being guessed."""
    return f"{seq:06x}{secrets.token_hex(3)}"


def own_seqs(specs: Sequence[JobSpec], first_seq: int) -> list[int]:
    """Each job's seq, in submission order: an array holds its tasks' seqs, its own row the last."""
    out = []
    seq = first_seq
    for spec in specs:
        seq += arrays.size(spec)
        out.append(seq - 1)
    return out


@dataclass
class Planned:
    """One job of a submission: its row and what the scheduler must remember about it."""

    id: str
    seq: int
    spec: JobSpec
    deps: list[str]  # job ids
    conditions: dict[str, Condition]  # what a dependency must end as, where not "ok" (completed)
    status: JobStatus = S.SUBMITTED
    reason: str | None = None
    waiting: set[str] = field(default_factory=set)
    stuck: tuple[str, str] | None = None  # (dependency, why): never met, and the job asked to be kept
    transitions: list[Transition] = field(default_factory=list)
    spec_json: str = ""


def plan(specs: Sequence[JobSpec], sent: Sequence[str], ids: Sequence[str], seqs: Sequence[int],
         batch: bool) -> list[Planned]:
    """One plan per job, its dependencies as ids. The stored spec names them by id, also where
    the batch named them by name; otherwise it is stored exactly as it was sent (`sent`)."""
    out = []
    for job_id, seq, spec, js, named in zip(ids, seqs, specs, sent, link(specs, ids, batch)):
        if named:
            spec = spec.with_dependencies(named)
            js = spec.stored()
        out.append(Planned(job_id, seq, spec, list(dict.fromkeys(spec.waits_for())), spec.conditions(),
                           spec_json=js))
    return out


def stored(specs: Sequence[JobSpec], batch: bool) -> list[str]:
    """Each spec as the daemon keeps it; a batch's refusal names its job."""
    out = []
    for i, spec in enumerate(specs):
        try:
            out.append(spec.stored())
        except Invalid as exc:
            raise Invalid(f"jobs[{i}]: {exc.message}" if batch else exc.message) from None
    return out


def link(specs: Sequence[JobSpec], ids: Sequence[str], batch: bool) -> list[dict[str, str]]:
    """The batch's names each job's dependencies use, mapped to job ids (empty: all are ids). In
    a batch a dependency may be the name of another job of the batch; a cycle or an ambiguous
    name refuses the whole batch."""
    waits = [s.waits_for() for s in specs]
    if not batch or not any(waits):
        return [{} for _ in specs]
    try:
        resolved = resolve_batch_names([s.name for s in specs], waits)
        topological_order({i: [d for d in row if isinstance(d, int)] for i, row in enumerate(resolved)}, len(specs))
    except GraphError as exc:
        if exc.cycle:  # its members by name, as the batch file calls them
            raise Invalid("cycle: " + " -> ".join(specs[i].name or f"jobs[{i}]" for i in exc.cycle)) from None
        raise Invalid(str(exc)) from None
    return [{raw: ids[d] for raw, d in zip(deps, row) if isinstance(d, int)} for deps, row in zip(waits, resolved)]


def decide(plans: list[Planned], known: Mapping[str, tuple[JobStatus, str]], admission: Callable[[Planned], str | None],
           batch: bool, admit: bool, owners: Mapping[str, str | None] | None = None, now: float = 0.0) -> None:
    """Settle each job's status. `known` holds the existing jobs among the dependencies (and
    `owners` their tenants: a job of another tenant is as unknown as a missing one); the jobs
    of this submission are known to be waiting. A batch is all or nothing: the first problem
    refuses it. A job admitted or rejected here is born in that status, with one event; with
    `admit` False (Ray not connected yet) jobs are born SUBMITTED, and admitted later."""
    new = {p.id for p in plans}
    owners = owners or {}
    for i, p in enumerate(plans):
        # (idempotent: the writer may run this again, alone, if its group commit failed)
        p.status, p.reason, p.waiting, p.stuck = S.SUBMITTED, None, set(), None
        unknown = next((d for d in p.deps if d not in new and (d not in known or owners.get(d) != p.spec.tenant)),
                       None)
        reason = f"unknown dependency: {unknown}" if unknown else None
        if admit and reason is None:
            reason = admission(p)
        if reason is not None and batch:  # what was sent is wrong (Invalid), or it is refused as it stands
            raise (Invalid if unknown else Rejected)(f"jobs[{i}] ({p.spec.display_name()}): {reason}")
        if reason is not None:
            p.transitions = [transition(p.id, None, S.REJECTED, reason)]
            p.status, p.reason = S.REJECTED, reason
            continue
        if not admit:
            p.transitions = [transition(p.id, None, S.SUBMITTED, "submitted")]
            continue
        waits = HELD if p.spec.hold else begins_at(p.spec, now)
        p.transitions = [transition(p.id, None, S.PENDING, f"admitted; {waits}" if waits else "admitted")]
        p.status, p.reason = S.PENDING, waits
        unmet = next((d for d in p.deps if d in known and d not in new
                      and met(p.conditions.get(d, "ok"), known[d][0]) is False), None)
        if unmet is not None:
            why = dependency_unmet(unmet, *known[unmet], p.conditions.get(unmet, "ok"))
            if not p.spec.kill_on_invalid_dep:
                p.stuck, p.reason = (unmet, why), f"{why}; {KEPT}"
                p.transitions.append(amend(p.id, S.PENDING, p.reason))
                continue
            p.reason = why
            p.transitions.append(transition(p.id, S.PENDING, S.CANCELLED, p.reason))
            p.status = S.CANCELLED
            continue
        p.waiting = {d for d in p.deps if d in new or met(p.conditions.get(d, "ok"), known[d][0]) is None}


HELD = "held by user"  # a held job's reason (Slurm's JobHeldUser)


def later(spec: JobSpec, now: float) -> float | None:
    """When a job asked to begin later than `now` (--begin), that moment."""
    return spec.begin_at if spec.begin_at is not None and spec.begin_at > now else None


def begins_at(spec: JobSpec, now: float) -> str | None:
    """A pending job's reason while it waits for its --begin time."""
    at = later(spec, now)
    return None if at is None else f"begins at {moment_text(at)}"


def queue_full(active: int, asked: int, limit: int) -> str:
    """Why the queue takes no more: the real count (the jobs of this request too) and the
    setting to raise, where the daemon reads it."""
    more = f" + {asked} in this batch" if asked > 1 else ""
    return (f"queue full: {active} active jobs{more}, jobmanager.max_jobs is {limit} (raise it in the daemon's "
            "config file, `jobmanager: {max_jobs: N}`, or with SAGE_OPS_JOBMANAGER__MAX_JOBS=N, then restart the "
            "daemon)")


def check_working_dirs(specs: Sequence[JobSpec], batch: bool) -> None:
    """A working_dir that is not a directory here is refused at submit, not found missing at run
    time. Asked only for a caller on this machine (the Unix socket): the path is the caller's own,
    made absolute where it was typed. A TCP caller's path may be another machine's (a node's)."""
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        wd = spec.working_dir
        if not wd or wd in seen:
            continue
        if not os.path.isdir(wd):
            what = "not a directory" if os.path.exists(wd) else "no such directory"
            where = f"jobs[{i}] ({spec.display_name()}): " if batch else ""
            raise Invalid(f"{where}working dir {wd}: {what} on {socket.gethostname()}")
        seen.add(wd)


def rows(plans: list[Planned], now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Job rows, audit events and dependency edges, ready for one executemany each."""
    jobs: list[dict[str, Any]] = []
    for p in plans:
        spec = p.spec
        ended = p.status in (S.REJECTED, S.CANCELLED)
        jobs.append(st.new_job_row(id=p.id, seq=p.seq, name=spec.display_name(), tenant=spec.tenant,
                                   status=p.status.value, reason=p.reason, priority=spec.priority, kind=spec.kind.value,
                                   spec=p.spec_json, created_at=now, updated_at=now, ended_at=now if ended else None,
                                   not_before=None if ended else later(p.spec, now), held=p.spec.hold,
                                   array_id=p.id if spec.array is not None else None))
    # comprehensions, not a generator per job: a 50,000-job batch's rows in 0.26 -> 0.17 s
    events = [st.event_row(t, now) for p in plans for t in p.transitions]
    edges = [{"job_id": p.id, "depends_on": d} for p in plans for d in p.deps]
    return jobs, events, edges


@dataclass(eq=False)
class Admission(TermPart):
    backend: Backend
    outcomes: Outcomes
    sealer: Sealer

    async def submit(self, specs: list[JobSpec], views: bool = True, batch: bool = False,
                     key: str | None = None, local: bool = False) -> tuple[list[Any], bool]:
        """Admit and durably record jobs; returns their views (or, with views=False, refs) and
        whether they are new (False: a request retried with the same idempotency key).

        A batch is one transaction: every job is accepted, or none (the first problem is the
        error). Dependencies are resolved inside that transaction. `local`: the caller is on this
        machine (check_working_dirs)."""
        if local:  # the file system may be slow (NFS): not on the event loop
            await asyncio.to_thread(check_working_dirs, specs, batch)
        for i, s in enumerate(specs):
            if s.array_task is not None:
                raise Invalid(f"jobs[{i}]: array_task is set by the daemon on an array's tasks; submit the array")
            if s.pipeline is not None and not s.pipeline.payload:
                raise Invalid(f"jobs[{i}]: a pipeline job needs its payload (submit it with RemoteEnvironment)")
        now = self.clock.now()
        seqs = own_seqs(specs, self.state.seq + 1)
        if seqs:  # taken now: a submit awaiting its write alongside gets the next ones
            self.state.seq = seqs[-1]
        ids = [new_job_id(seq) for seq in seqs]
        specs = [with_min_cpu(self.sealer.seal(s) if s.secret_env else s) for s in specs]  # never stored in clear
        sent = stored(specs, batch)  # once: the request's digest, the stored specs and the queued jobs
        digest = hashlib.sha256("\n".join(sent).encode()).hexdigest() if key else ""
        plans = plan(specs, sent, ids, seqs, batch)
        nodes = self.backend.node_totals()  # once per request, not per job
        limit = self.cfg.jobmanager.max_jobs
        room = limit - self.state.active
        if batch and self.state.ready and len(specs) > room:  # the batch as a whole, not its job number room+1
            raise Rejected(queue_full(self.state.active, len(specs), limit))
        fits: dict[Any, str | None] = {}  # a sweep asks for the same resources 10,000 times
        tenants = {spec.tenant for spec in specs}
        for tenant in tenants:
            if tenant is not None and tenant not in self.state.quotas:
                raise NotFound(f"no such tenant: {tenant} (sage-ops tenant create {tenant})")
        before = {t: self.state.queued.use[t].jobs for t in tenants if t in self.state.queued.use}
        share = share_of_queue(self.cfg.jobmanager.max_jobs, len(self.state.quotas))
        held = {t: self.state.queued.use[t].jobs + self.state.dispatched.use[t].jobs for t in tenants
                if t in self.state.queued.use or t in self.state.dispatched.use}
        queued: dict[str | None, int] = {}
        counter = [0]

        def admission(p: Planned) -> str | None:
            counter[0] += 1
            if counter[0] > room:
                return queue_full(self.state.active, len(plans) if batch else 1, limit)
            r = p.spec.resources
            tenant = p.spec.tenant
            if tenant is not None and (quotas := self.state.quotas.get(tenant)) is not None:
                if why := never_within(tenant, quotas, r.cpu, r.gpu):
                    return why
                if quotas.max_queued is not None:
                    mine = queued.get(tenant, before.get(tenant, 0))
                    if mine >= quotas.max_queued:
                        return f"quota: tenant {tenant} has {mine} queued jobs (max-queued {quotas.max_queued})"
                    queued[tenant] = mine + 1
                elif share is not None:
                    mine = queued.get(tenant, held.get(tenant, 0))
                    if mine >= share:
                        return (f"quota: tenant {tenant} holds {mine} active jobs, its share of max_jobs="
                                f"{limit} among {len(self.state.quotas)} tenants (set --max-queued)")
                    queued[tenant] = mine + 1
            shape = (r.cpu, r.gpu, r.memory, tuple(sorted(r.custom_resources.items())))
            if shape not in fits:
                fits[shape] = self.state.capacity.never_fits(r.as_ray(), nodes)
            return fits[shape]

        external = {d for p in plans for d in p.deps} - set(ids)

        first: list[dict[str, Any]] = []

        def op(conn: Connection) -> list[str] | None:
            if key and (seen := st.claim_key(conn, key, digest, ids, now)) is not None:
                return seen  # the same request again: nothing new
            owners: dict[str, str | None] = {}
            known = st.statuses_of(conn, external, owners) if external else {}
            if corr := {a for p in plans for a in p.spec.after_corr}:
                arrays = job_arrays.arrays_among(conn, corr)
                for i, p in enumerate(plans):
                    if bad := next((a for a in p.spec.after_corr if arrays.get(a, "?") != p.spec.tenant), None):
                        raise Invalid(f"jobs[{i}]: after_corr {bad}: no such array")
            queued.clear()
            counter[0] = 0
            decide(plans, known, admission, batch, admit=self.state.ready, owners=owners, now=now)
            jobs, events, edges = rows(plans, now)
            st.insert_jobs(conn, jobs, events, edges)
            first[:] = jobs[:1]
            return None

        seen = await self.store.write(op)  # durable before acknowledged
        if seen is not None:
            return await self._existing(seen, views), False
        self.counters.submitted += len(plans)
        for p in plans:
            if is_terminal(p.status):
                continue
            self.state.active += 1
            job = Queued.of(p.id, p.seq, p.spec, p.status, priority=p.spec.priority, stored=p.spec_json,
                            not_before=later(p.spec, now), held=p.spec.hold)
            self.state.queued[p.id] = job
            if p.spec.array is not None:
                self.state.arrays[p.id] = ArrayRun(job, Indices.parse(p.spec.array.indices))
            if p.stuck is not None:
                self.state.stuck[p.id] = p.stuck
            elif p.status is S.PENDING and not self.state.waiting.add(p.id, p.waiting, p.conditions):
                self.state.queue(job)
        if not views:  # a batch: plain JobRef-shaped dicts, serialized as they are
            return [{"id": p.id, "name": p.spec.display_name(), "status": p.status.value, "reason": p.reason}
                    for p in plans], True
        if len(plans) == 1:
            return [st.fresh_view(first[0], plans[0].spec)], True
        return await self._existing([p.id for p in plans], True), True

    async def _existing(self, ids: list[str], views: bool) -> list[Any]:
        if views:
            return await self.store.read(lambda c: [st.get_job(c, i) for i in ids])
        known = await self.store.read(lambda c: st.statuses_of(c, ids))
        return [{"id": i, "name": known[i][1], "status": known[i][0].value, "reason": None} for i in ids]

    async def admit_recovered(self, jobs: list[Queued]) -> None:
        """Jobs submitted while Ray was unreachable: check them against the cluster now."""
        if not jobs:
            return
        now = self.clock.now()
        nodes = self.backend.node_totals()
        trs: list[Transition] = []
        for job in jobs:
            reason = self.state.capacity.never_fits(job.need, nodes)
            ended_at: dict[str, Any] = {"ended_at": now} if reason else {}
            trs.append(transition(job.id, S.SUBMITTED, S.REJECTED if reason else S.PENDING, reason or "admitted",
                                  **ended_at))
        applied = await self.store.write(lambda c: st.apply_transitions(c, trs, now))
        ended = []
        for tr, ok in zip(trs, applied):
            if ok:
                self.state.queued[tr.job_id].status = tr.new
                if tr.new is S.REJECTED:
                    ended.append((self.state.queued.pop(tr.job_id).id, S.REJECTED))
        await self.outcomes.finish(ended)

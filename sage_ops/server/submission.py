"""Turning validated specs into job rows: admission (queue size, resources that no node could
ever hold) and dependency resolution (unknown, already failed, already done, still running).

Pure functions: the scheduler calls them inside the writer's transaction, so the dependency
statuses they see are exactly the ones committed before the new jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import Invalid
from ..lifecycle import JobStatus, Transition, transition
from ..schemas import JobSpec
from . import store as st
from .execution_graph import FAILED_DEP, GraphError, resolve_batch_names, topological_order

S = JobStatus


@dataclass
class Planned:
    """One job of a submission: its row and what the scheduler must remember about it."""

    id: str
    seq: int
    spec: JobSpec
    deps: list[str]  # job ids
    status: JobStatus = S.SUBMITTED
    reason: str | None = None
    waiting: set[str] = field(default_factory=set)
    transitions: list[Transition] = field(default_factory=list)
    spec_json: str = ""


def plan(specs: Sequence[JobSpec], sent: Sequence[str], ids: Sequence[str], first_seq: int,
         batch: bool) -> list[Planned]:
    """One plan per job, its dependencies as ids. The stored spec names them by id, also where
    the batch named them by name; otherwise it is stored exactly as it was sent (`sent`)."""
    out = []
    for n, (job_id, spec, js, deps) in enumerate(zip(ids, specs, sent, link(specs, ids, batch))):
        if deps != spec.dependencies:
            spec = spec.model_copy(update={"dependencies": deps})
            js = spec.model_dump_json()
        out.append(Planned(job_id, first_seq + n, spec, deps, spec_json=js))
    return out


def link(specs: Sequence[JobSpec], ids: Sequence[str], batch: bool) -> list[list[str]]:
    """Each job's dependencies as ids. In a batch a dependency may be the name of another job of
    the batch; a cycle or an ambiguous name refuses the whole batch."""
    if not batch or not any(s.dependencies for s in specs):
        return [list(dict.fromkeys(s.dependencies)) if s.dependencies else s.dependencies for s in specs]
    try:
        resolved = resolve_batch_names([s.name for s in specs], [s.dependencies for s in specs])
        topological_order({i: [d for d in row if isinstance(d, int)] for i, row in enumerate(resolved)}, len(specs))
    except GraphError as exc:
        raise Invalid(str(exc)) from None
    return [list(dict.fromkeys(ids[d] if isinstance(d, int) else d for d in row)) for row in resolved]


def decide(plans: list[Planned], known: Mapping[str, tuple[JobStatus, str]], admission: Callable[[Planned], str | None],
           batch: bool, admit: bool, owners: Mapping[str, str | None] | None = None) -> None:
    """Settle each job's status. `known` holds the existing jobs among the dependencies (and
    `owners` their tenants: a job of another tenant is as unknown as a missing one); the jobs
    of this submission are known to be waiting. A batch is all or nothing: the first problem
    refuses it. With `admit` False (Ray not connected yet) jobs stay SUBMITTED."""
    new = {p.id for p in plans}
    owners = owners or {}
    for i, p in enumerate(plans):
        # (idempotent: the writer may run this again, alone, if its group commit failed)
        p.status, p.reason, p.waiting = S.SUBMITTED, None, set()
        p.transitions = [transition(p.id, None, S.SUBMITTED, "submitted")]
        unknown = next((d for d in p.deps if d not in new and (d not in known or owners.get(d) != p.spec.tenant)),
                       None)
        reason = f"unknown dependency: {unknown}" if unknown else None
        if admit and reason is None:
            reason = admission(p)
        if reason is not None and batch:
            raise Invalid(f"jobs[{i}] ({p.spec.display_name()}): {reason}")
        if reason is not None:
            p.transitions.append(transition(p.id, S.SUBMITTED, S.REJECTED, reason))
            p.status, p.reason = S.REJECTED, reason
            continue
        if not admit:
            continue
        p.transitions.append(transition(p.id, S.SUBMITTED, S.PENDING, "admitted"))
        p.status = S.PENDING
        failed = next((d for d in p.deps if d in known and known[d][0] in FAILED_DEP), None)
        if failed is not None:
            p.reason = dependency_failed(failed, *known[failed])
            p.transitions.append(transition(p.id, S.PENDING, S.CANCELLED, p.reason))
            p.status = S.CANCELLED
            continue
        p.waiting = {d for d in p.deps if d in new or known[d][0] is not S.COMPLETED}


def dependency_failed(dep: str, status: JobStatus, name: str) -> str:
    return f"dependency {dep} ({name}) ended {status.value}"


def rows(plans: list[Planned], now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Job rows, audit events and dependency edges, ready for one executemany each."""
    jobs, events, edges = [], [], []
    for p in plans:
        spec = p.spec
        ended = p.status in (S.REJECTED, S.CANCELLED)
        jobs.append({
            "id": p.id, "seq": p.seq, "name": spec.display_name(), "tenant": spec.tenant, "status": p.status.value,
            "reason": p.reason, "priority": spec.priority, "kind": spec.kind.value, "spec": p.spec_json,
            "exit_code": None, "result": None, "attempts_made": 0, "node": None, "created_at": now,
            "updated_at": now, "started_at": None, "ended_at": now if ended else None,
        })
        events.extend(st.event_row(t, now) for t in p.transitions)
        edges.extend({"job_id": p.id, "depends_on": d} for d in p.deps)
    return jobs, events, edges

"""The job DAG: checks at submit (missing dependencies, cycles), topological order, the critical
path and per-DAG progress, and the JSON form the CLI and the TUI draw.

Pure functions over plain mappings: the scheduler and the API feed them what the store holds, so
the same rules serve admission, `sage-ops graph` and the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ...lifecycle import JobStatus, is_terminal
from ...schemas import Condition
from ...views import GraphNode, GraphView

S = JobStatus


def met(condition: Condition, status: JobStatus) -> bool | None:
    """Is a dependency that is now `status` met for `condition`? None while it has not ended;
    False when it never will be (Slurm's afterok, afternotok, afterany)."""
    if not is_terminal(status):
        return None
    return condition == "any" or (status is S.COMPLETED) == (condition == "ok")


class GraphError(ValueError):
    """A dependency problem found at submit: the job is rejected with this message; `cycle`, the
    batch indexes around a cycle (its first one again at the end), when that is the problem."""

    def __init__(self, message: str, cycle: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.cycle = list(cycle)


def resolve_batch_names(names: Sequence[str | None], deps: Sequence[Sequence[str]]) -> list[list[int | str]]:
    """Inside one batch a dependency may name another job of the batch: turn those names into
    batch indexes; anything else is taken as a job id. A name used twice cannot be referenced."""
    index: dict[str, int] = {}
    dupes: set[str] = set()
    for i, name in enumerate(names):
        if name is not None:
            if name in index:
                dupes.add(name)
            index[name] = i
    out: list[list[int | str]] = []
    for i, wanted in enumerate(deps):
        row: list[int | str] = []
        for dep in wanted:
            if dep in dupes:
                raise GraphError(f"jobs[{i}]: dependency {dep!r} is ambiguous: several jobs have that name")
            j = index.get(dep)
            if j == i:
                raise GraphError(f"jobs[{i}]: a job cannot depend on itself")
            row.append(j if j is not None else dep)
        out.append(row)
    return out


def topological_order(deps: Mapping[int, Sequence[int]], n: int) -> list[int]:
    """Kahn's algorithm over batch indexes; a cycle raises GraphError naming one job on it."""
    indegree = [0] * n
    children: list[list[int]] = [[] for _ in range(n)]
    for child, parents in deps.items():
        for p in parents:
            indegree[child] += 1
            children[p].append(child)
    ready = [i for i in range(n) if indegree[i] == 0]
    order: list[int] = []
    while ready:
        i = ready.pop()
        order.append(i)
        for c in children[i]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    if len(order) < n:
        cycle = _cycle(deps, indegree)
        raise GraphError(f"jobs[{cycle[0]}]: its dependencies form a cycle", cycle)
    return order


def _cycle(deps: Mapping[int, Sequence[int]], indegree: Sequence[int]) -> list[int]:
    """One cycle among the jobs Kahn's algorithm left (each still has a parent left): walk up
    through such parents until a job comes again. In run order (each before the next), from its
    first job in the batch, closed: [0, 1, 0]."""
    path: list[int] = []
    at: dict[int, int] = {}
    i = next(j for j in range(len(indegree)) if indegree[j] > 0)
    while i not in at:
        at[i] = len(path)
        path.append(i)
        i = next(p for p in deps.get(i, ()) if indegree[p] > 0)
    loop = path[at[i]:][::-1]  # each runs before the next
    first = loop.index(min(loop))
    loop = loop[first:] + loop[:first]
    return [*loop, loop[0]]


@dataclass
class Node:
    id: str
    name: str
    status: JobStatus
    deps: list[str]
    started_at: float | None = None
    ended_at: float | None = None
    priority: int = 0


def component(start: str, parents: Mapping[str, Iterable[str]], children: Mapping[str, Iterable[str]]) -> set[str]:
    """Every job connected to `start` through dependencies, either way: its DAG."""
    seen = {start}
    todo = [start]
    while todo:
        cur = todo.pop()
        for nxt in (*parents.get(cur, ()), *children.get(cur, ())):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _duration(node: Node, now: float) -> float:
    if node.started_at is None:
        return 0.0
    return max(0.0, (now if node.ended_at is None else node.ended_at) - node.started_at)


def critical_path(nodes: Mapping[str, Node], now: float) -> list[str]:
    """The chain of dependencies with the longest run time so far (finished jobs count their
    run time, running ones their time until now, waiting ones nothing; ties go to the longer chain)."""
    order = _topo_ids(nodes)
    best: dict[str, tuple[float, int, str | None]] = {}
    for job_id in order:
        node = nodes[job_id]
        prev = max(((best[d][0], best[d][1], d) for d in node.deps if d in best), default=(0.0, 0, None))
        best[job_id] = (prev[0] + _duration(node, now), prev[1] + 1, prev[2])
    if not best:
        return []
    end = max(best, key=lambda k: (best[k][0], best[k][1]))
    path = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = best[cur][2]
    return path[::-1]


def _topo_ids(nodes: Mapping[str, Node]) -> list[str]:
    ids = list(nodes)
    pos = {k: i for i, k in enumerate(ids)}
    deps = {pos[k]: [pos[d] for d in n.deps if d in pos] for k, n in nodes.items()}
    return [ids[i] for i in topological_order(deps, len(ids))]


def graph_view(root: str, nodes: Mapping[str, Node], now: float) -> GraphView:
    """The JSON form: nodes in topological order, the critical path and the progress counts."""
    order = _topo_ids(nodes)
    path = critical_path(nodes, now)
    on_path = set(path)
    counts = {s: 0 for s in S}
    for n in nodes.values():
        counts[n.status] += 1
    done = sum(v for s, v in counts.items() if is_terminal(s))
    return GraphView(
        root=root, order=order, critical_path=path,
        total=len(nodes), done=done, completed=counts[S.COMPLETED], running=counts[S.RUNNING],
        pending=counts[S.PENDING] + counts[S.SUBMITTED], failed=counts[S.FAILED],
        cancelled=counts[S.CANCELLED] + counts[S.REJECTED],
        nodes=[GraphNode(id=k, name=nodes[k].name, status=nodes[k].status, dependencies=nodes[k].deps,
                         priority=nodes[k].priority, duration=round(_duration(nodes[k], now), 3),
                         critical=k in on_path) for k in order],
    )


class Waiting:
    """The live part of the DAG the scheduler keeps in memory: which pending jobs wait for which
    unfinished jobs, and on what condition. Rebuilt from the store at start-up; every operation
    is O(edges touched), never O(all jobs)."""

    def __init__(self) -> None:
        self.blockers: dict[str, set[str]] = {}  # waiting job -> unfinished dependencies
        self.children: dict[str, set[str]] = {}  # unfinished job -> jobs waiting for it
        self.conditions: dict[tuple[str, str], Condition] = {}  # (job, dependency) -> condition, where not "ok"

    def add(self, job_id: str, unfinished: Iterable[str], conditions: Mapping[str, Condition] | None = None) -> bool:
        """Record that `job_id` waits for `unfinished`; False if it waits for nothing."""
        deps = set(unfinished)
        if not deps:
            return False
        self.blockers[job_id] = deps
        for d in deps:
            self.children.setdefault(d, set()).add(job_id)
        for d, c in (conditions or {}).items():
            if d in deps and c != "ok":
                self.conditions[job_id, d] = c
        return True

    def is_waiting(self, job_id: str) -> bool:
        return job_id in self.blockers

    def ended(self, job_id: str, status: JobStatus) -> tuple[list[str], list[tuple[str, Condition]]]:
        """`job_id` ended as `status`: the jobs that now wait for nothing (freed), and those whose
        condition on it can never be met (doomed, with that condition). It waits for nothing now."""
        freed: list[str] = []
        doomed: list[tuple[str, Condition]] = []
        for child in self.children.pop(job_id, ()):
            deps = self.blockers.get(child)
            if deps is None:
                continue
            condition = self.conditions.pop((child, job_id), "ok")
            if not met(condition, status):
                doomed.append((child, condition))
                continue
            deps.discard(job_id)
            if not deps:
                del self.blockers[child]
                freed.append(child)
        self.forget(job_id)
        return freed, doomed

    def forget(self, job_id: str) -> None:
        """`job_id` waits for nothing any more (it ended, or left the queue): drop those edges."""
        for d in self.blockers.pop(job_id, ()):
            self.conditions.pop((job_id, d), None)
            kids = self.children.get(d)
            if kids is not None:
                kids.discard(job_id)
                if not kids:
                    del self.children[d]

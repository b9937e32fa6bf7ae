"""The compiler: logical graph -> execution graph.

Each operator gets its partitioning (forward where the parallelism is equal, round-robin where
not, unless the user keyed, rebalanced or broadcast the stream), and consecutive operators joined
by a forward edge, each the other's only neighbour, are fused into one task (operator chaining,
as in Flink): a fused task is one Ray actor per instance and passes records on in a plain loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .shapes import OperatorInfo, OperatorKind, Partitioning, PipelineOptions, PipelinePlan, TaskEdge, TaskInfo
from .stream import LogicalGraph, LogicalNode


@dataclass
class OutEdge:
    target: int
    partitioning: Partitioning
    key: Callable[[Any], Any] | None


@dataclass
class TaskSpec:
    """One fused task: what each of its instances (actors) runs."""

    id: int
    name: str
    parallelism: int
    operators: list[LogicalNode]
    outputs: list[OutEdge] = field(default_factory=list)
    inputs: list[tuple[int, Partitioning]] = field(default_factory=list)  # (source task, partitioning)
    num_cpus: float = 0.0

    @property
    def is_source(self) -> bool:
        return self.operators[0].op.kind == "source"


@dataclass
class ExecutionGraph:
    tasks: list[TaskSpec]
    plan: PipelinePlan

    def task(self, task_id: int) -> TaskSpec:
        return self.tasks[task_id]

    def expected_ends(self, task: TaskSpec) -> int:
        """End-of-stream markers an instance waits for: one per upstream channel."""
        return sum(1 if p is Partitioning.FORWARD else self.tasks[src].parallelism for src, p in task.inputs)

    def out_edges(self, task: TaskSpec, index: int, channel: Callable[[int, int], Any]) -> list[tuple[Any, ...]]:
        """Instance `index`'s outgoing edges as (partitioning, key, channels); `channel(task, i)`
        makes a channel to instance i of a task (a new one per sender: each has its own window)."""
        edges = []
        for e in task.outputs:
            targets = [index] if e.partitioning is Partitioning.FORWARD else range(self.tasks[e.target].parallelism)
            edges.append((e.partitioning, e.key, [channel(e.target, j) for j in targets]))
        return edges

    @property
    def sources(self) -> list[TaskSpec]:
        return [t for t in self.tasks if t.is_source]


def _check(graph: LogicalGraph) -> None:
    if not graph.nodes:
        raise ValueError("the pipeline is empty: start with env.source(...)")
    if not any(n.op.kind == "sink" for n in graph.nodes):
        raise ValueError("the pipeline has no sink: end it with .sink(...)")


def _partitioning(node: LogicalNode, upstream: LogicalNode) -> Partitioning:
    if node.partitioning is not None:
        return node.partitioning
    return Partitioning.FORWARD if node.parallelism == upstream.parallelism else Partitioning.ROUND_ROBIN


def compile_graph(graph: LogicalGraph, options: PipelineOptions | None = None) -> ExecutionGraph:
    options = options or PipelineOptions()
    _check(graph)
    by_id = {n.id: n for n in graph.nodes}
    parts = {n.id: _partitioning(n, by_id[n.inputs[0]]) for n in graph.nodes if n.inputs}
    consumers = {n.id: graph.consumers(n.id) for n in graph.nodes}
    task_of: dict[int, int] = {}
    tasks: list[TaskSpec] = []
    for node in graph.nodes:  # nodes are in topological order: inputs are added first
        up = by_id[node.inputs[0]] if node.inputs else None
        if (options.chaining and up is not None and parts[node.id] is Partitioning.FORWARD
                and len(consumers[up.id]) == 1 and len(node.inputs) == 1):
            task = tasks[task_of[up.id]]
            task.operators.append(node)
        else:
            task = TaskSpec(id=len(tasks), name="", parallelism=node.parallelism, operators=[node])
            tasks.append(task)
            if up is not None:
                tasks[task_of[up.id]].outputs.append(OutEdge(task.id, parts[node.id], node.key))
                task.inputs.append((task_of[up.id], parts[node.id]))
        task_of[node.id] = task.id
    for task in tasks:
        task.name = " -> ".join(n.name for n in task.operators)
        task.num_cpus = max(n.num_cpus for n in task.operators)
    plan = PipelinePlan(
        operators=[OperatorInfo(id=n.id, name=n.name, kind=OperatorKind(n.op.kind), parallelism=n.parallelism,
                                task=task_of[n.id], inputs=list(n.inputs), partitioning=parts.get(n.id))
                   for n in graph.nodes],
        tasks=[TaskInfo(id=t.id, name=t.name, operators=[n.id for n in t.operators], parallelism=t.parallelism)
               for t in tasks],
        edges=[TaskEdge(source=t.id, target=e.target, partitioning=e.partitioning) for t in tasks for e in t.outputs],
    )
    return ExecutionGraph(tasks, plan)

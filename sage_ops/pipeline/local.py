"""Run an execution graph in this process: the same task instances as on Ray, joined by direct
calls (LocalEnvironment: tests, notebooks, debugging with a breakpoint)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .execution_graph import ExecutionGraph
from .progress import MetricsBoard
from .runtime import PipelineError, TaskInstance
from .shapes import OperatorMetrics, PipelineOptions

SLICE = 0.05  # seconds a source runs before the next source gets its turn


class Cancelled(PipelineError):
    def __init__(self) -> None:
        super().__init__("cancelled")


class LocalChannel:
    def __init__(self, target: TaskInstance) -> None:
        self.target = target

    def send(self, batch: list[Any]) -> float:
        self.target.push(batch)
        return 0.0

    def end(self) -> float:
        self.target.end()
        return 0.0


def run_local(graph: ExecutionGraph, options: PipelineOptions, stop: threading.Event,
              report: Callable[[list[OperatorMetrics]], None] | None = None, job_id: str | None = None,
              every: float = 1.0) -> list[OperatorMetrics]:
    """Run until every source has ended (or `stop` is set: Cancelled); returns the final metrics."""
    instances = {t.id: [TaskInstance(t, i, graph.expected_ends(t), options, job_id) for i in range(t.parallelism)]
                 for t in graph.tasks}
    board = MetricsBoard([o.id for o in graph.plan.operators])

    def snapshot() -> list[OperatorMetrics]:
        for t in graph.tasks:
            for i, inst in enumerate(instances[t.id]):
                board.update((t.id, i), inst.metrics())
        return board.snapshot()

    try:
        for t in graph.tasks:
            for i, inst in enumerate(instances[t.id]):
                inst.connect(graph.out_edges(t, i, lambda task, j: LocalChannel(instances[task][j])))
        active = [inst for t in graph.sources for inst in instances[t.id]]
        last = time.monotonic()
        while active:
            for inst in list(active):
                if stop.is_set():
                    raise Cancelled
                if inst.run_for(SLICE):
                    active.remove(inst)
            if report is not None and time.monotonic() - last >= every:
                last = time.monotonic()
                report(snapshot())
    except BaseException:
        for group in instances.values():
            for inst in group:
                inst.stop()
        raise
    final = snapshot()
    if report is not None:
        report(final)
    return final

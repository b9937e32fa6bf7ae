"""The pipeline on Ray: one actor per fused task instance, joined by actor calls.

Batches go straight from an upstream actor to a downstream one (no queue actor in between, no
call per record). Calls from one actor to another run in the order they were sent, so an end
marker arrives after the data before it. Each channel keeps at most `max_inflight` batches
unacknowledged: a sender that has more waits for the oldest, which is backpressure.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from .execution_graph import ExecutionGraph, TaskSpec
from .progress import MetricsBoard
from .runtime import PipelineError, TaskInstance
from .shapes import OperatorMetrics, PipelineOptions

SLICE = 0.5  # seconds a source reads between reports to the driver


def get(ref: Any, what: str = "a pipeline task") -> Any:
    """ray.get that surfaces the operator's own error (not Ray's wrapping of it)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, PipelineError):
            raise cause from None
        raise PipelineError(f"{what} failed: {str(exc).strip().splitlines()[-1][:500]}") from None
    except ray.exceptions.RayActorError as exc:
        raise PipelineError(f"{what} died: {str(exc).strip().splitlines()[0][:500]}") from None


class RayChannel:
    def __init__(self, handle: Any, max_inflight: int, label: str) -> None:
        self.handle, self.max_inflight, self.label = handle, max_inflight, label
        self.inflight: deque[Any] = deque()

    def send(self, batch: list[Any]) -> float:
        self.inflight.append(self.handle.push.remote(batch))
        if len(self.inflight) <= self.max_inflight:
            return 0.0
        t = time.perf_counter()
        get(self.inflight.popleft(), self.label)
        return time.perf_counter() - t

    def end(self) -> float:
        t = time.perf_counter()
        while self.inflight:
            get(self.inflight.popleft(), self.label)
        waited = time.perf_counter() - t
        get(self.handle.end.remote(), self.label)
        return waited


@ray.remote(max_restarts=0, max_task_retries=0)
class TaskActor:
    def __init__(self, spec: TaskSpec, index: int, expected_ends: int, options: dict[str, Any],
                 job_id: str | None, working_dir: str | None = None) -> None:
        # The job's working directory, as for the driver (the actor has a worker process of its
        # own): relative paths (FileSource("input.csv"), the user's own open()s) mean the same.
        if working_dir and os.path.isdir(working_dir):
            os.chdir(working_dir)
        self.task = TaskInstance(spec, index, expected_ends, PipelineOptions(**options), job_id)
        self.label = f"{spec.name} [{index + 1}/{spec.parallelism}]"

    def __repr__(self) -> str:  # Ray prefixes the actor's output with it in the job's log
        return self.label

    def connect(self, edges: list[tuple[Any, Any, list[tuple[Any, str]]]]) -> int:
        mi = self.task.options.max_inflight
        self.task.connect([(p, k, [RayChannel(h, mi, label) for h, label in targets]) for p, k, targets in edges])
        return os.getpid()

    def push(self, batch: list[Any]) -> None:
        self.task.push(batch)

    def end(self) -> None:
        self.task.end()

    def run_for(self, seconds: float) -> tuple[bool, list[dict[str, Any]]]:
        return self.task.run_for(seconds), self.task.metrics()

    def metrics(self) -> list[dict[str, Any]]:
        return self.task.metrics()


class RayExecutor:
    def __init__(self, graph: ExecutionGraph, options: PipelineOptions, job_id: str | None = None,
                 working_dir: str | None = None) -> None:
        self.graph, self.options, self.job_id, self.working_dir = graph, options, job_id, working_dir
        self.actors: dict[int, list[Any]] = {}
        self.pids: dict[tuple[int, int], int] = {}
        self.board = MetricsBoard([o.id for o in graph.plan.operators])

    def _label(self, task: int, index: int) -> str:
        t = self.graph.task(task)
        return f"task {t.name!r} [{index + 1}/{t.parallelism}]"

    def start(self) -> None:
        """One actor per task instance, then the wiring (which opens every operator)."""
        g = self.graph
        for t in g.tasks:
            self.actors[t.id] = [
                TaskActor.options(num_cpus=t.num_cpus).remote(t, i, g.expected_ends(t),
                                                              self.options.model_dump(), self.job_id,
                                                              self.working_dir)
                for i in range(t.parallelism)]
        waiting = {}
        for t in g.tasks:
            for i, actor in enumerate(self.actors[t.id]):
                edges = g.out_edges(t, i, lambda task, j: (self.actors[task][j], self._label(task, j)))
                waiting[(t.id, i)] = actor.connect.remote(edges)
        for key, ref in waiting.items():
            self.pids[key] = get(ref, self._label(*key))

    def run(self, report: Callable[[list[OperatorMetrics]], None], every: float = 1.0) -> list[OperatorMetrics]:
        """Run every source to its end (a streaming one: until the process is stopped)."""
        self.start()
        running = {}
        for t in self.graph.sources:
            for i, actor in enumerate(self.actors[t.id]):
                running[actor.run_for.remote(SLICE)] = (t.id, i)
        asked: dict[tuple[int, int], Any] = {}
        last = time.monotonic()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
            for ref in ready:
                key = running.pop(ref)
                done, rows = get(ref, self._label(*key))
                self.board.update(key, rows)
                if not done:
                    running[self.actors[key[0]][key[1]].run_for.remote(SLICE)] = key
            if time.monotonic() - last >= every:
                last = time.monotonic()
                self._collect(asked, wait=False)
                report(self.board.snapshot())
        # Questions still outstanding were queued before the last batches: ask again. The ends
        # went down synchronously before the sources returned, so the answers are final.
        asked.clear()
        self._collect(asked, wait=True)
        final = self.board.snapshot()
        report(final)
        return final

    def _collect(self, asked: dict[tuple[int, int], Any], wait: bool) -> None:
        """Metrics of the non-source instances: at most one question outstanding per actor (it
        waits behind the batches already queued there)."""
        for t in self.graph.tasks:
            if t.is_source:
                continue
            for i, actor in enumerate(self.actors[t.id]):
                key = (t.id, i)
                if key not in asked:
                    asked[key] = actor.metrics.remote()
                ref = asked[key]
                if wait or ray.wait([ref], timeout=0)[0]:
                    self.board.update(key, get(asked.pop(key), self._label(*key)))

    def shutdown(self) -> None:
        for group in self.actors.values():
            for actor in group:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001, S110 - already gone
                    pass

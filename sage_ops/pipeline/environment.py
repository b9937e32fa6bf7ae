"""Where a pipeline runs: LocalEnvironment (this process) or RemoteEnvironment (a sage-ops job on
Ray, through the daemon). Both build the graph with the same API and compile it the same way."""

from __future__ import annotations

import base64
import itertools
import os
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .. import paths
from .connectors import CollectionSource, FileSource, GeneratorSource, anchored
from .execution_graph import ExecutionGraph, compile_graph
from .runtime import PipelineError
from .shapes import OperatorMetrics, PipelineOptions, PipelinePlan, PipelineSpec, PipelineView
from .stream import DataStream, LogicalGraph, add_operator


class BaseEnvironment:
    def __init__(self, name: str = "pipeline", *, parallelism: int = 1, batch_size: int = 1024,
                 linger_ms: float = 50.0, max_inflight: int = 4, chaining: bool = True) -> None:
        self.name = name
        self.parallelism = parallelism
        self.options = PipelineOptions(batch_size=batch_size, linger_ms=linger_ms, max_inflight=max_inflight,
                                       chaining=chaining)
        self.graph = LogicalGraph()

    def source(self, fn: Any, *args: Any, parallelism: int | None = None, name: str | None = None,
               num_cpus: float | None = None, **kwargs: Any) -> DataStream:
        """Start a stream: a SourceFunction class (built per instance with the arguments) or instance."""
        node = add_operator(self, "source", fn, args, kwargs, inputs=[], partitioning=None, key=None,
                            parallelism=parallelism, name=name, num_cpus=num_cpus)
        return DataStream(self, node)

    def from_collection(self, items: Iterable[Any], **kw: Any) -> DataStream:
        return self.source(CollectionSource, items, **kw)

    def from_generator(self, factory: Callable[..., Iterable[Any]], *args: Any, **kw: Any) -> DataStream:
        return self.source(GeneratorSource, factory, *args, **kw)

    def read_text(self, path: str | os.PathLike[str], **kw: Any) -> DataStream:
        return self.source(FileSource, path, **kw)

    def compile(self) -> ExecutionGraph:
        return compile_graph(self.graph, self.options)

    def plan(self) -> PipelinePlan:
        """The execution graph as `sage-ops graph` shows it (operators, fused tasks, edges)."""
        return self.compile().plan


# -- in this process -------------------------------------------------------------------------
@dataclass
class _LocalRun:
    thread: threading.Thread
    view: PipelineView
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class LocalEnvironment(BaseEnvironment):
    """Runs the pipeline in this process, in a background thread: the same operators, chaining and
    partitioning as on Ray, without a cluster. Functions are called as they are (no pickling), so
    a sink may append to a list of the caller's."""

    _ids = itertools.count(1)

    def __init__(self, name: str = "pipeline", **kw: Any) -> None:
        super().__init__(name, **kw)
        self._runs: dict[str, _LocalRun] = {}

    def submit(self) -> str:
        graph = self.compile()
        job_id = f"local-{next(self._ids)}"
        view = PipelineView(plan=graph.plan, attempt=1)

        def report(metrics: list[OperatorMetrics]) -> None:
            view.metrics = metrics

        def run() -> None:
            from .local import run_local

            try:
                run_local(graph, self.options, run_.stop, report, job_id)
            except BaseException as exc:  # noqa: BLE001 - kept for wait_for_completion
                run_.error = exc

        run_ = _LocalRun(threading.Thread(target=run, name=f"sage-ops-{job_id}", daemon=True), view)
        self._runs[job_id] = run_
        run_.thread.start()
        return job_id

    def _run(self, job_id: str) -> _LocalRun:
        if job_id not in self._runs:
            raise KeyError(f"no such local pipeline: {job_id}")
        return self._runs[job_id]

    def wait_for_completion(self, job_id: str, timeout: float | None = None) -> PipelineView:
        """Wait; raise the operator's error if it failed (PipelineError) or TimeoutError."""
        run = self._run(job_id)
        run.thread.join(timeout)
        if run.thread.is_alive():
            raise TimeoutError(f"{job_id} still running after {timeout}s")
        if run.error is not None:
            raise run.error
        return run.view

    def cancel(self, job_id: str) -> None:
        self._run(job_id).stop.set()

    def metrics(self, job_id: str) -> PipelineView:
        return self._run(job_id).view

    def execute(self, timeout: float | None = None) -> PipelineView:
        """Submit and wait (Flink's `env.execute()`)."""
        return self.wait_for_completion(self.submit(), timeout)


# -- as a sage-ops job -----------------------------------------------------------------------
def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {sys.prefix, sys.base_prefix, paths.get("stdlib", ""), paths.get("purelib", ""),
             paths.get("platlib", "")}
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


def _user_modules(graph: LogicalGraph) -> set[Any]:
    """Modules whose code must travel by value: the user's own, which the nodes cannot import."""
    roots = _installed_roots()
    found = set()
    objs: list[Any] = []
    for node in graph.nodes:
        objs += [node.op.fn, node.key, *node.op.args, *node.op.kwargs.values()]
    for obj in objs:
        name = getattr(obj, "__module__", None) or getattr(type(obj), "__module__", None)
        module = sys.modules.get(name or "")
        path = getattr(module, "__file__", None)
        if module is None or path is None or name == "__main__" or (name or "").split(".")[0] == "sage_ops":
            continue
        if not os.path.realpath(path).startswith(roots):
            found.add(module)
    return found


def pack(graph: LogicalGraph, options: PipelineOptions) -> tuple[str, int]:
    """The graph as base64 cloudpickle, with the user's own modules pickled by value."""
    import cloudpickle

    modules = _user_modules(graph)
    for m in modules:
        cloudpickle.register_pickle_by_value(m)
    try:
        raw = cloudpickle.dumps((graph, options.model_dump()))
    finally:
        for m in modules:
            cloudpickle.unregister_pickle_by_value(m)
    return base64.b64encode(raw).decode("ascii"), len(raw)


class PipelineFailed(PipelineError):
    def __init__(self, job: Any) -> None:
        super().__init__(f"pipeline job {job.id} ended {job.status.value}: {job.reason or ''}".rstrip(": "))
        self.job = job


class RemoteEnvironment(BaseEnvironment):
    """Submits the pipeline as a sage-ops job (kind `pipeline`): it queues, retries, logs and is
    cancelled like any other job, and runs on Ray with one actor per fused task instance. Its
    operators run in the job's working directory (`working_dir`, by default the directory
    `submit()` is called from; a relative one is taken from there), and FileSource's and
    FileSink's relative paths are made absolute against it before the job is sent, so
    FileSource("input.csv") reads the submitter's input.csv."""

    def __init__(self, name: str = "pipeline", jobmanager_address: str | None = None, *,
                 token: str | None = None, config: dict[str, Any] | None = None, working_dir: str | None = None,
                 **kw: Any) -> None:
        super().__init__(name, **kw)
        from ..client import JobManagerClient

        self.client = JobManagerClient(jobmanager_address, config, token)
        self.working_dir = working_dir  # None: where submit() is called, as for any job

    def spec(self, **job: Any) -> dict[str, Any]:
        """The job spec `submit` sends (plan in plain JSON; code in an opaque payload)."""
        plan = self.plan()
        where = paths.working_dir(job.pop("working_dir", None) or self.working_dir)  # None: cwd is gone
        graph = LogicalGraph([replace(n, op=anchored(n.op, where)) for n in self.graph.nodes]) if where else self.graph
        payload, size = pack(graph, self.options)
        pipeline = PipelineSpec(payload=payload, payload_bytes=size, plan=plan, options=self.options,
                                python=f"{sys.version_info.major}.{sys.version_info.minor}")
        return {"kind": "pipeline", "name": self.name, "pipeline": pipeline.model_dump(mode="json"),
                **({"working_dir": where} if where else {}), **job}

    def submit(self, **job: Any) -> str:
        """Submit; returns the job id once the job is committed. Keywords are JobSpec fields:
        priority, dependencies, resources, retry_policy, timeout, tenant, env, pip, venv; and
        `workdir`, a local directory shipped with the job as the working directory of the driver
        and of every operator (Ray's runtime_env working_dir): its modules import on any node."""
        return self.client.submit_job(self.spec(**job)).id

    def wait_for_completion(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for the job to end; return its view if it COMPLETED, else raise PipelineFailed
        with the job's error (the failing operator's name and traceback)."""
        from ..lifecycle import JobStatus, is_terminal

        job = self.client.wait(job_id, timeout)
        if not is_terminal(job.status):
            raise TimeoutError(f"{job_id} still {job.status.value} after {timeout}s")
        if job.status is not JobStatus.COMPLETED:
            raise PipelineFailed(job)
        return job

    def cancel(self, job_id: str) -> Any:
        return self.client.cancel_job(job_id)

    def metrics(self, job_id: str) -> PipelineView | None:
        return self.client.get_job(job_id).pipeline

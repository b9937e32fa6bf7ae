"""The process a pipeline job runs: `python -m sage_ops.pipeline.driver PAYLOAD PYTHON`.

It is the job's process (its own process group, logs captured, killed on cancel), so the
daemon never un-pickles a pipeline: this process does, on the node, as the job. It joins the
Ray cluster as a driver; the actors it creates die with it. Metrics and the error go to the
runner through the file descriptor `$SAGE_OPS_CONTROL_FD`, one JSON object per line.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
from typing import Any

from .execution_graph import compile_graph
from .runtime import PipelineError
from .shapes import PipelineOptions


class Control:
    def __init__(self) -> None:
        fd = os.environ.get("SAGE_OPS_CONTROL_FD")
        self.fd = int(fd) if fd and fd.isdigit() else None

    def send(self, message: dict[str, Any]) -> None:
        if self.fd is None:
            return
        data = (json.dumps(message) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            self.fd = None  # the runner is gone; the job is being torn down


def load(path: str, python: str) -> tuple[Any, PipelineOptions]:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python != here:
        raise PipelineError(f"the pipeline was pickled by Python {python}, and this node runs Python {here}: "
                            "submit it from the Python version the cluster runs")
    import cloudpickle

    with open(path, "rb") as f:
        raw = base64.b64decode(f.read())
    try:
        graph, options = cloudpickle.loads(raw)
    except Exception as exc:  # noqa: BLE001 - say what is missing on this node
        raise PipelineError(f"cannot load the pipeline's code on this node: {type(exc).__name__}: {exc} "
                            "(install the module on every node, or define the code in the submitting "
                            "script)") from None
    return graph, PipelineOptions(**options)


def shipped_runtime_env() -> dict[str, Any] | None:
    """The job's shipped working directory (`$SAGE_OPS_WORKDIR`) as Ray's own `working_dir` for
    the operators' actors: Ray uploads it once (by content hash) and each node that runs one
    caches it, on the actors' sys.path and as their directory, so the user's modules import
    there as they do in the driver. What the job wrote into it beside the package stays out."""
    where = os.environ.get("SAGE_OPS_WORKDIR")
    if not where or not os.path.isdir(where):
        return None
    return {"working_dir": where, "excludes": ["/pipeline.b64", "/result.json"]}


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    control = Control()
    for s in (signal.SIGTERM, signal.SIGINT):  # the job may inherit them ignored from its Ray worker
        signal.signal(s, _terminate)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        graph, options = load(argv[0], argv[1])
        compiled = compile_graph(graph, options)
    except (PipelineError, ValueError) as exc:
        control.send({"error": str(exc)})
        print(f"sage-ops pipeline: {exc}", file=sys.stderr)
        return 1
    import ray

    from .ray_executor import RayExecutor

    ray.init(address=os.environ.get("SAGE_OPS_RAY_ADDRESS") or "auto", log_to_driver=True,
             logging_level="WARNING", runtime_env=shipped_runtime_env())
    job_id = os.environ.get("SAGE_OPS_JOB_ID")
    executor = RayExecutor(compiled, options, job_id, working_dir=os.getcwd())  # the job's working_dir
    names = {o.id: o.name for o in compiled.plan.operators}
    try:
        final = executor.run(lambda m: control.send({"metrics": [x.model_dump() for x in m]}))
    except PipelineError as exc:
        control.send({"error": str(exc)})
        print(f"sage-ops pipeline: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        executor.shutdown()
    for m in final:
        print(f"{names[m.id]}: {m.records_in} in, {m.records_out} out", flush=True)
    if os.environ.get("SAGE_OPS_RESULT_FILE"):
        from ..job import set_result

        set_result({"operators": [{"id": m.id, "name": names[m.id], "records_in": m.records_in,
                                   "records_out": m.records_out} for m in final]})
    return 0


if __name__ == "__main__":
    sys.exit(main())

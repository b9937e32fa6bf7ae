"""sage-ops: a terminal-first job manager for Ray clusters.

The public names are imported lazily so that `sage-ops --help` and shell completion never
pay for Ray, SQLAlchemy or FastAPI.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "JobManagerServer": "sage_ops.server.daemon.daemon",
    "JobManagerClient": "sage_ops.client",
    "AsyncJobManagerClient": "sage_ops.client",
    "JobStatus": "sage_ops.lifecycle",
    "JobSpec": "sage_ops.schemas",
    "Resources": "sage_ops.schemas",
    "RetryPolicy": "sage_ops.schemas",
    "RemoteEnvironment": "sage_ops.pipeline.environment",
    "LocalEnvironment": "sage_ops.pipeline.environment",
    # what the JobManager docs' pipeline examples name, under the one import path they change
    "FileSource": "sage_ops.pipeline.connectors",
    "FileSink": "sage_ops.pipeline.connectors",
    "MapFunction": "sage_ops.pipeline.functions",
    "FilterFunction": "sage_ops.pipeline.functions",
    "FlatMapFunction": "sage_ops.pipeline.functions",
    "ReduceFunction": "sage_ops.pipeline.functions",
    "SourceFunction": "sage_ops.pipeline.functions",
    "SinkFunction": "sage_ops.pipeline.functions",
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sage_ops' has no attribute {name!r}")

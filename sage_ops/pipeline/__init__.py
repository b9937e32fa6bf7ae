"""Pipeline jobs: a DataStream API (source, map, filter, flatmap, key_by, reduce, sink) that runs
in this process (LocalEnvironment) or as a sage-ops job on Ray (RemoteEnvironment).

Names are imported lazily, so the daemon and the CLI can read the shapes without cloudpickle.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "LocalEnvironment": "environment", "RemoteEnvironment": "environment", "PipelineFailed": "environment",
    "DataStream": "stream", "KeyedStream": "stream",
    "Function": "functions", "MapFunction": "functions", "FilterFunction": "functions",
    "FlatMapFunction": "functions", "ReduceFunction": "functions", "SourceFunction": "functions",
    "SinkFunction": "functions", "RuntimeContext": "functions",
    "FileSource": "connectors", "CollectionSource": "connectors", "GeneratorSource": "connectors",
    "FileSink": "connectors", "CallableSink": "connectors",
    "PipelineError": "runtime", "OperatorFailed": "runtime",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The operator base classes users subclass, and how one operator becomes a callable per instance.

A class is constructed once per parallel instance (each instance has its own state) and then
`open(ctx)`-ed; a plain function or lambda is used as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RuntimeContext:
    """What an operator instance knows about where it runs."""

    operator: str
    index: int
    parallelism: int
    job_id: str | None = None


class Function:
    """Base of every operator: `open` before the first record, `close` after the last."""

    def open(self, ctx: RuntimeContext) -> None:  # noqa: B027 - optional hook
        """Set up per-instance state (a connection, a model); `ctx.index` says which instance."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what `open` took; called once the input has ended."""


class MapFunction(Function):
    def map(self, value: Any) -> Any:
        raise NotImplementedError


class FilterFunction(Function):
    def filter(self, value: Any) -> bool:
        raise NotImplementedError


class FlatMapFunction(Function):
    def flat_map(self, value: Any) -> Iterable[Any]:
        raise NotImplementedError


class ReduceFunction(Function):
    def reduce(self, acc: Any, value: Any) -> Any:
        raise NotImplementedError


class SourceFunction(Function):
    """Yields records. A source whose `run` ends is bounded (a batch job); one that never ends is
    a streaming job that runs until cancelled. Split the input by `ctx.index`/`ctx.parallelism`."""

    def run(self) -> Iterator[Any]:
        raise NotImplementedError


class SinkFunction(Function):
    def invoke(self, value: Any) -> None:
        raise NotImplementedError

    def write_batch(self, values: list[Any]) -> None:
        """Write a batch; override for sinks that can write many records at once."""
        for v in values:
            self.invoke(v)


_METHOD = {"map": (MapFunction, "map"), "filter": (FilterFunction, "filter"),
           "flatmap": (FlatMapFunction, "flat_map"), "reduce": (ReduceFunction, "reduce"),
           "source": (SourceFunction, "run"), "sink": (SinkFunction, "write_batch")}


class _Wrapped(Function):
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn


class _CallSink(_Wrapped, SinkFunction):
    def write_batch(self, values: list[Any]) -> None:
        fn = self.fn
        for v in values:
            fn(v)


@dataclass
class OperatorDef:
    """One logical operator as the user wrote it: what to build, and with which arguments."""

    kind: str
    fn: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        target = self.fn
        name = getattr(target, "__name__", None) or type(target).__name__
        return "lambda" if name == "<lambda>" else name

    def check(self) -> None:
        """Refuse, at graph-building time, what could never run."""
        base, _method = _METHOD[self.kind]
        if isinstance(self.fn, type):
            if not issubclass(self.fn, base) and self.kind in ("source", "sink"):
                raise TypeError(f"{self.kind}: {self.fn.__name__} is not a {base.__name__}")
            return
        if self.args or self.kwargs:
            raise TypeError(f"{self.kind}: arguments are for operator classes; {self.label()} is not a class")
        if self.kind == "source" and not isinstance(self.fn, SourceFunction):
            raise TypeError("source: give a SourceFunction class or instance (FileSource, CollectionSource, "
                            "GeneratorSource)")
        if not callable(self.fn) and not isinstance(self.fn, base):
            raise TypeError(f"{self.kind}: {self.label()} is neither a function nor a {base.__name__}")

    def build(self, ctx: RuntimeContext) -> tuple[Function | None, Callable[..., Any]]:
        """The instance (to close later, if any) and the callable the runtime calls."""
        base, method = _METHOD[self.kind]
        if isinstance(self.fn, type):
            obj = self.fn(*self.args, **self.kwargs)
        elif isinstance(self.fn, Function):
            obj = copy.deepcopy(self.fn)  # each instance keeps state of its own
        elif self.kind == "sink":
            obj = _CallSink(self.fn)
        else:
            return None, self.fn
        if isinstance(obj, Function):
            obj.open(ctx)
        if isinstance(obj, base):
            return obj if isinstance(obj, Function) else None, getattr(obj, method)
        if callable(obj) and self.kind != "source":  # a callable class that is not one of ours
            return None, obj
        raise TypeError(f"{self.kind}: {type(obj).__name__} is not a {base.__name__}")

"""Sources and sinks that come with sage-ops: files, collections, generators, callables.

Paths are read and written on the node where the operator instance runs: on a cluster, use a
path every node sees (a shared file system). A relative path is the submitter's: a
RemoteEnvironment makes it absolute (`anchored`) before the pipeline leaves the client.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from operator import methodcaller
from pathlib import Path
from typing import Any, ClassVar, TextIO

from .functions import OperatorDef, RuntimeContext, SinkFunction, SourceFunction

_CHOMP = methodcaller("removesuffix", "\n")


class _Split(SourceFunction):
    index, parallelism = 0, 1

    def open(self, ctx: RuntimeContext) -> None:
        self.index, self.parallelism = ctx.index, ctx.parallelism


class FileSource(_Split):
    """The lines of a text file, without their newline. Parallel instances split the file by byte
    ranges (a line belongs to the range its first byte is in), so each line is read once."""

    path_params: ClassVar[tuple[str, ...]] = ("path",)  # what `anchored` makes absolute

    def __init__(self, path: str | os.PathLike[str], encoding: str = "utf-8") -> None:
        self.path, self.encoding = os.fspath(path), encoding

    def run(self) -> Iterator[str]:
        if self.parallelism == 1:
            with open(self.path, encoding=self.encoding) as f:
                yield from map(_CHOMP, f)
            return
        size = os.path.getsize(self.path)
        start = size * self.index // self.parallelism
        end = size * (self.index + 1) // self.parallelism
        with open(self.path, "rb") as f:
            if start:
                f.seek(start - 1)
                f.readline()  # the rest of a line that began before this range
            pos = f.tell()
            while pos < end:
                line = f.readline()
                if not line:
                    return
                pos += len(line)
                yield line.rstrip(b"\r\n").decode(self.encoding)


class CollectionSource(_Split):
    """The items of a collection (bounded); instance i of n takes every n-th item from i."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items if isinstance(items, (list, tuple, range)) else list(items)

    def run(self) -> Iterator[Any]:
        items = self.items
        if self.parallelism == 1:
            return iter(items)
        return itertools.islice(items, self.index, None, self.parallelism)


class GeneratorSource(_Split):
    """What `factory(*args)` yields. A generator that never ends makes a streaming job that runs
    until it is cancelled. With parallelism > 1 every instance calls the factory."""

    def __init__(self, factory: Callable[..., Iterable[Any]], *args: Any) -> None:
        self.factory, self.args = factory, args

    def run(self) -> Iterator[Any]:
        return iter(self.factory(*self.args))


class FileSink(SinkFunction):
    """One JSON value per line (tuples become arrays). With parallelism n > 1, instance i writes
    `<stem>-<i><suffix>` (`out.jsonl` -> `out-0.jsonl`, ...). Each batch is flushed as written,
    so a streaming job's output can be followed."""

    path_params: ClassVar[tuple[str, ...]] = ("path",)

    def __init__(self, path: str | os.PathLike[str], encoding: str = "utf-8") -> None:
        self.path, self.encoding = os.fspath(path), encoding
        self._file: TextIO | None = None

    @staticmethod
    def part(path: str, index: int, parallelism: int) -> str:
        if parallelism == 1:
            return path
        p = Path(path)
        return str(p.with_name(f"{p.stem}-{index}{p.suffix}"))

    def open(self, ctx: RuntimeContext) -> None:
        target = self.part(self.path, ctx.index, ctx.parallelism)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(target, "w", encoding=self.encoding)  # noqa: SIM115 - closed in close()

    def write_batch(self, values: list[Any]) -> None:
        assert self._file is not None
        dumps = json.dumps
        self._file.write("".join([dumps(v, ensure_ascii=False, default=str) + "\n" for v in values]))
        self._file.flush()

    def invoke(self, value: Any) -> None:
        self.write_batch([value])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class CallableSink(SinkFunction):
    """Calls `fn(record)` for each record (in the operator's process: `print` goes to the job's log)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def invoke(self, value: Any) -> None:
        self.fn(value)


def anchored(op: OperatorDef, base: str) -> OperatorDef:
    """`op` with the relative paths of its operator (the parameters its class names in
    `path_params`, as FileSource and FileSink do) made absolute against `base`, the job's working
    directory: they mean the submitter's files on whichever node runs the operator, and an error
    names the file that was meant. `op` itself is left as it was."""
    names = getattr(op.fn, "path_params", ())
    if not names:
        return op
    if not isinstance(op.fn, type):  # an instance: a copy of it with absolute paths
        fn = copy.copy(op.fn)
        for name in names:
            if isinstance(getattr(fn, name, None), (str, os.PathLike)):
                setattr(fn, name, os.path.join(base, getattr(fn, name)))
        return dataclasses.replace(op, fn=fn)
    try:
        bound = inspect.signature(op.fn).bind_partial(*op.args, **op.kwargs)
    except TypeError:  # arguments that do not fit: building the operator says so, where it runs
        return op
    for name in names:
        if isinstance(bound.arguments.get(name), (str, os.PathLike)):
            bound.arguments[name] = os.path.join(base, bound.arguments[name])
    return dataclasses.replace(op, args=bound.args, kwargs=bound.kwargs)

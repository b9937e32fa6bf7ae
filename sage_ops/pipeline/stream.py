"""The DataStream API and the logical graph it builds (one node per operator, as written)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .functions import OperatorDef
from .shapes import MAX_OPERATORS, MAX_PARALLELISM, Partitioning

if TYPE_CHECKING:
    from .environment import BaseEnvironment

KIND_LABEL = {"source": "Source", "map": "Map", "filter": "Filter", "flatmap": "FlatMap", "reduce": "Reduce",
              "sink": "Sink"}


@dataclass
class LogicalNode:
    id: int
    op: OperatorDef
    name: str
    parallelism: int
    inputs: list[int] = field(default_factory=list)
    partitioning: Partitioning | None = None  # of its input; None: forward if it can, else round-robin
    key: Callable[[Any], Any] | None = None  # hash key of its input (and a reduce's state key)
    num_cpus: float = 0.0


@dataclass
class LogicalGraph:
    nodes: list[LogicalNode] = field(default_factory=list)

    def add(self, node: LogicalNode) -> LogicalNode:
        if len(self.nodes) >= MAX_OPERATORS:
            raise ValueError(f"a pipeline has at most {MAX_OPERATORS} operators")
        self.nodes.append(node)
        return node

    def consumers(self, node_id: int) -> list[LogicalNode]:
        return [n for n in self.nodes if node_id in n.inputs]


def _parallelism(value: int | None, default: int) -> int:
    p = default if value is None else value
    if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= MAX_PARALLELISM:
        raise ValueError(f"parallelism must be an integer from 1 to {MAX_PARALLELISM}, not {p!r}")
    return p


def add_operator(env: BaseEnvironment, kind: str, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                 inputs: list[int], partitioning: Partitioning | None, key: Callable[[Any], Any] | None,
                 parallelism: int | None, name: str | None, num_cpus: float | None) -> LogicalNode:
    op = OperatorDef(kind, fn, args, kwargs)
    op.check()
    if num_cpus is not None and not (isinstance(num_cpus, (int, float)) and 0 <= num_cpus <= 1024):
        raise ValueError(f"num_cpus must be a number from 0 to 1024, not {num_cpus!r}")
    node = LogicalNode(id=len(env.graph.nodes), op=op, name=name or f"{KIND_LABEL[kind]}: {op.label()}",
                       parallelism=_parallelism(parallelism, env.parallelism), inputs=inputs,
                       partitioning=partitioning, key=key, num_cpus=float(num_cpus or 0))
    return env.graph.add(node)


class DataStream:
    """A stream of records; each method adds an operator and returns the stream it produces."""

    def __init__(self, env: BaseEnvironment, node: LogicalNode, partitioning: Partitioning | None = None,
                 key: Callable[[Any], Any] | None = None) -> None:
        self._env, self._node, self._partitioning, self._key = env, node, partitioning, key

    def _then(self, kind: str, fn: Any, args: tuple[Any, ...], parallelism: int | None, name: str | None,
              num_cpus: float | None, kwargs: dict[str, Any]) -> DataStream:
        if self._node.op.kind == "sink":
            raise ValueError("nothing can follow a sink")
        node = add_operator(self._env, kind, fn, args, kwargs, inputs=[self._node.id],
                            partitioning=self._partitioning, key=self._key, parallelism=parallelism, name=name,
                            num_cpus=num_cpus)
        return DataStream(self._env, node)

    def map(self, fn: Any, *args: Any, parallelism: int | None = None, name: str | None = None,
            num_cpus: float | None = None, **kwargs: Any) -> DataStream:
        """One record out per record in: a function, or a MapFunction class (built per instance
        with `*args, **kwargs`)."""
        return self._then("map", fn, args, parallelism, name, num_cpus, kwargs)

    def filter(self, fn: Any, *args: Any, parallelism: int | None = None, name: str | None = None,
               num_cpus: float | None = None, **kwargs: Any) -> DataStream:
        """Keep the records for which `fn` is true."""
        return self._then("filter", fn, args, parallelism, name, num_cpus, kwargs)

    def flatmap(self, fn: Any, *args: Any, parallelism: int | None = None, name: str | None = None,
                num_cpus: float | None = None, **kwargs: Any) -> DataStream:
        """Any number of records out per record in: `fn` returns an iterable."""
        return self._then("flatmap", fn, args, parallelism, name, num_cpus, kwargs)

    flat_map = flatmap

    def sink(self, fn: Any, *args: Any, parallelism: int | None = None, name: str | None = None,
             num_cpus: float | None = None, **kwargs: Any) -> None:
        """Write the records: a SinkFunction class (FileSink, ...) or a function called per record."""
        self._then("sink", fn, args, parallelism, name, num_cpus, kwargs)

    def key_by(self, key: Callable[[Any], Any]) -> KeyedStream:
        """Send equal keys to the same instance of the next operator."""
        if not callable(key):
            raise TypeError("key_by: the key must be a function of the record")
        return KeyedStream(self._env, self._node, Partitioning.HASH, key)

    def rebalance(self) -> DataStream:
        """Spread the records round-robin over the next operator's instances."""
        return DataStream(self._env, self._node, Partitioning.ROUND_ROBIN)

    def broadcast(self) -> DataStream:
        """Send every record to every instance of the next operator."""
        return DataStream(self._env, self._node, Partitioning.BROADCAST)


class KeyedStream(DataStream):
    def reduce(self, fn: Any, *args: Any, parallelism: int | None = None, name: str | None = None,
               num_cpus: float | None = None, **kwargs: Any) -> DataStream:
        """A running aggregate per key: emits the updated value for every record
        (`fn(acc, record)`; the first record of a key is its first value)."""
        return self._then("reduce", fn, args, parallelism, name, num_cpus, kwargs)

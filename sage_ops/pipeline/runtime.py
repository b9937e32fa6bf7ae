"""One instance of a fused task: the loop every executor (in-process or on Ray) runs.

Records move in batches: each operator of the chain takes a list and returns a list (a C-level
`map`/`filter` where it can), and the task's output is buffered per downstream channel and sent
when a batch is full, when `linger_ms` has passed, or at the end of the input. A channel (an
actor call on Ray, a direct call in-process) holds at most `max_inflight` unacknowledged batches,
so a slow operator slows its producers instead of filling memory.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .execution_graph import TaskSpec
from .functions import Function, RuntimeContext
from .partitioning import spread
from .shapes import Partitioning, PipelineOptions

MAX_TRACE = 8000
_MISSING = object()


class PipelineError(Exception):
    """A pipeline failed; the message says where."""


class OperatorFailed(PipelineError):
    def __init__(self, operator: str, index: int, parallelism: int, trace: str) -> None:
        super().__init__(operator, index, parallelism, trace)
        self.operator, self.index, self.parallelism, self.trace = operator, index, parallelism, trace

    def __str__(self) -> str:
        last = self.trace.strip().splitlines()[-1] if self.trace.strip() else "error"
        return (f"operator {self.operator!r} (instance {self.index + 1}/{self.parallelism}) failed: {last}\n"
                f"{self.trace}")


class Channel(Protocol):
    def send(self, batch: list[Any]) -> float:
        """Deliver a batch; returns the seconds spent waiting for room (backpressure)."""

    def end(self) -> float:
        """Say the input has ended, once everything sent is processed downstream."""


class _Op:
    """One operator of the chain, built for this instance, with its counters."""

    def __init__(self, node: Any, ctx: RuntimeContext) -> None:
        self.id, self.name, self.kind = node.id, node.name, node.op.kind
        self.obj, fn = node.op.build(ctx)
        self.fn = fn
        self.records_in = self.records_out = self.batches_in = 0
        self.busy = 0.0
        if self.kind == "map":
            self.apply: Callable[[list[Any]], list[Any]] = lambda b: list(map(fn, b))
        elif self.kind == "filter":
            self.apply = lambda b: list(filter(fn, b))
        elif self.kind == "flatmap":
            self.apply = lambda b: list(itertools.chain.from_iterable(map(fn, b)))
        elif self.kind == "reduce":
            self.apply = _running_reduce(fn, node.key)
        elif self.kind == "sink":
            def write(b: list[Any]) -> list[Any]:
                fn(b)
                return b
            self.apply = write

    def close(self) -> None:
        if isinstance(self.obj, Function):
            self.obj.close()


def _running_reduce(fn: Callable[[Any, Any], Any], key: Callable[[Any], Any] | None) -> Callable[[list[Any]], list]:
    state: dict[Any, Any] = {}
    key = key or (lambda x: None)

    def apply(batch: list[Any]) -> list[Any]:
        out = []
        get = state.get
        for x in batch:
            k = key(x)
            acc = get(k, _MISSING)
            acc = x if acc is _MISSING else fn(acc, x)
            state[k] = acc
            out.append(acc)
        return out
    return apply


class Output:
    """The task's outgoing edges: per-channel buffers, partitioned, sent when full."""

    def __init__(self, edges: list[tuple[Partitioning, Callable[[Any], Any] | None, list[Channel]]],
                 batch_size: int) -> None:
        self.edges = edges
        self.buffers = [[[] for _ in channels] for _p, _k, channels in edges]
        self.rotation = [0] * len(edges)
        self.batch_size = batch_size
        self.backpressure = 0.0

    def emit(self, batch: list[Any]) -> None:
        for e, (partitioning, key, channels) in enumerate(self.edges):
            bufs = self.buffers[e]
            self.rotation[e] = spread(partitioning, key, batch, bufs, self.rotation[e])
            for c, buf in enumerate(bufs):
                if len(buf) >= self.batch_size:
                    bufs[c] = []
                    self.backpressure += channels[c].send(buf)

    def flush(self) -> None:
        for e, (_p, _k, channels) in enumerate(self.edges):
            bufs = self.buffers[e]
            for c, buf in enumerate(bufs):
                if buf:
                    bufs[c] = []
                    self.backpressure += channels[c].send(buf)

    def end(self) -> None:
        self.flush()
        for _p, _k, channels in self.edges:
            for ch in channels:
                self.backpressure += ch.end()


class TaskInstance:
    def __init__(self, spec: TaskSpec, index: int, expected_ends: int, options: PipelineOptions,
                 job_id: str | None = None) -> None:
        self.spec, self.index, self.expected_ends = spec, index, expected_ends
        self.options = options
        self.job_id = job_id
        self.lock = threading.RLock()
        self.ends = 0
        self.finished = False
        self.error: BaseException | None = None
        self.ops: list[_Op] = []
        self.output: Output | None = None
        self.pending: deque[Any] = deque()  # a source's records not yet through the chain
        self.iterator: Any = None
        self.source_busy = 0.0
        self._stop = threading.Event()

    # -- set up -------------------------------------------------------------------------------
    def connect(self, edges: list[tuple[Partitioning, Callable[[Any], Any] | None, list[Channel]]]) -> None:
        """Build and open the operators, attach the outputs, start the linger flusher."""
        self.output = Output(edges, self.options.batch_size)
        for position, node in enumerate(self.spec.operators):
            ctx = RuntimeContext(node.name, self.index, self.spec.parallelism, self.job_id)
            self.ops.append(self._guard(position, lambda n=node, c=ctx: _Op(n, c)))
        if self.spec.is_source:
            src = self.ops[0]
            self.iterator = self._guard(0, lambda: iter(src.fn()))
        if self.options.linger_ms > 0:
            threading.Thread(target=self._flusher, name="sage-ops-linger", daemon=True).start()

    def _guard(self, position: int, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except PipelineError:
            raise
        except Exception:  # noqa: BLE001 - the user's code: say which operator, with its traceback
            raise self.failed(position) from None

    def failed(self, position: int) -> OperatorFailed:
        """The error being handled, as the named operator's failure; the traceback keeps the
        user's frames, not this loop's."""
        node = self.spec.operators[position]
        exc = sys.exc_info()[1]
        assert exc is not None
        te = traceback.TracebackException.from_exception(exc)
        te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != __file__])
        trace = "".join(te.format())[-MAX_TRACE:]
        return OperatorFailed(node.name, self.index, self.spec.parallelism, trace)

    # -- records ------------------------------------------------------------------------------
    def _chain(self, batch: list[Any], first: int) -> None:
        perf = time.perf_counter
        for position in range(first, len(self.ops)):
            op = self.ops[position]
            op.records_in += len(batch)
            op.batches_in += 1
            t = perf()
            try:
                batch = op.apply(batch)
            except Exception:  # noqa: BLE001 - the user's code
                raise self.failed(position) from None
            op.busy += perf() - t
            op.records_out += len(batch)
            if not batch:
                return
        assert self.output is not None
        self.output.emit(batch)

    def push(self, batch: list[Any]) -> None:
        with self.lock:
            self._raise_pending()
            self._chain(batch, 0)
            if self.options.linger_ms == 0:
                self.output.flush()  # type: ignore[union-attr]

    def _drain_source(self) -> None:
        dq = self.pending
        batch = [dq.popleft() for _ in range(len(dq))]  # not clear(): the flusher may be appending
        if batch:
            self.ops[0].records_out += len(batch)
            self.ops[0].batches_in += 1
            self._chain(batch, 1)
        if self.options.linger_ms == 0:
            self.output.flush()  # type: ignore[union-attr]

    def run_for(self, seconds: float) -> bool:
        """Read the source for about `seconds`; True once it has ended (and the end has gone
        downstream, so the whole graph below this instance has finished)."""
        self._raise_pending()
        deadline = time.monotonic() + seconds
        dq, size, it = self.pending, self.options.batch_size, self.iterator
        append = dq.append
        started = time.perf_counter()
        spent = self.ops[0].busy
        n = 0
        try:
            for record in it:
                append(record)
                n += 1
                # a full batch goes down the chain; a slow source (its batches leave by linger)
                # still looks at the clock every 64 records, to report back in time
                if len(dq) >= size or (not n & 63 and time.monotonic() >= deadline):
                    t = time.perf_counter()
                    with self.lock:
                        self._raise_pending()
                        self._drain_source()
                    started += time.perf_counter() - t  # the chain's time is not the source's
                    if time.monotonic() >= deadline:
                        self.ops[0].busy = spent + time.perf_counter() - started
                        return False
        except PipelineError:
            raise
        except Exception:  # noqa: BLE001 - the source's own code failed
            raise self.failed(0) from None
        self.ops[0].busy = spent + time.perf_counter() - started
        with self.lock:
            self._drain_source()
        self.end()
        return True

    def end(self) -> None:
        """One upstream channel has ended; after the last, flush, close and pass the end on."""
        with self.lock:
            self._raise_pending()
            self.ends += 1
            if self.ends < self.expected_ends:
                return
            self.finished = True
            self._stop.set()
            assert self.output is not None
            self.output.flush()
            for position, op in enumerate(self.ops):
                self._guard(position, op.close)
            self.output.end()

    def _raise_pending(self) -> None:
        if self.error is not None:
            raise self.error

    def _flusher(self) -> None:
        while not self._stop.wait(self.options.linger_ms / 1000):
            with self.lock:
                if self.finished or self.error is not None:
                    return
                try:
                    if self.pending:
                        self._drain_source()
                    self.output.flush()  # type: ignore[union-attr]
                except BaseException as exc:  # noqa: BLE001 - raised by the next push or run_for
                    self.error = exc
                    return

    def stop(self) -> None:
        """Cancelled: stop flushing and close the operators (files are flushed), without an end."""
        self._stop.set()
        with self.lock:
            self.finished = True
            for op in self.ops:
                try:
                    op.close()
                except Exception:  # noqa: BLE001, S110 - closing after a cancel is best effort
                    pass

    def metrics(self) -> list[dict[str, Any]]:
        bp = self.output.backpressure if self.output else 0.0
        last = len(self.ops) - 1
        return [{"id": op.id, "records_in": op.records_in, "records_out": op.records_out,
                 "batches_in": op.batches_in, "busy_seconds": op.busy,
                 "backpressure_seconds": bp if n == last else 0.0} for n, op in enumerate(self.ops)]

"""Per-operator metrics: the sum over an operator's instances, with rates between reports."""

from __future__ import annotations

import time
from typing import Any

from .shapes import OperatorMetrics

_COUNTERS = ("records_in", "records_out", "batches_in", "busy_seconds", "backpressure_seconds")


class MetricsBoard:
    """Keeps the last counters each instance reported and turns them into one row per operator."""

    def __init__(self, operators: list[int]) -> None:
        self.operators = operators
        self.latest: dict[Any, list[dict[str, Any]]] = {}
        self._last: tuple[float, dict[int, tuple[int, int]]] | None = None

    def update(self, instance: Any, rows: list[dict[str, Any]]) -> None:
        self.latest[instance] = rows

    def snapshot(self, now: float | None = None) -> list[OperatorMetrics]:
        now = time.monotonic() if now is None else now
        totals: dict[int, dict[str, float]] = {op: dict.fromkeys(_COUNTERS, 0) for op in self.operators}
        for rows in self.latest.values():
            for row in rows:
                t = totals.setdefault(row["id"], dict.fromkeys(_COUNTERS, 0))
                for name in _COUNTERS:
                    t[name] += row[name]
        counts = {op: (int(t["records_in"]), int(t["records_out"])) for op, t in totals.items()}
        rates: dict[int, tuple[float, float]] = {}
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            for op, (rin, rout) in counts.items():
                before = self._last[1].get(op, (0, 0))
                rates[op] = (max(0, rin - before[0]) / dt, max(0, rout - before[1]) / dt)
        self._last = (now, counts)
        return [OperatorMetrics(id=op, records_in=counts[op][0], records_out=counts[op][1],
                                batches_in=int(t["batches_in"]), busy_seconds=round(t["busy_seconds"], 6),
                                backpressure_seconds=round(t["backpressure_seconds"], 6),
                                rate_in=round(rates.get(op, (0.0, 0.0))[0], 1),
                                rate_out=round(rates.get(op, (0.0, 0.0))[1], 1))
                for op, t in sorted(totals.items())]

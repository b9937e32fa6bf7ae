"""Job arrays (Slurm's --array): the index set `0-999:2,1005%20` parsed into ranges, addressed by
position without ever listing it, and the spec of one task. Shared by the CLI (to check what was
typed) and the daemon (to make tasks as their turn comes)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_TASKS = 1_000_000  # indices in one array
MAX_INDEX = 4_000_000_000
_PART = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


@dataclass(frozen=True)
class Indices:
    """An array's indices, as ranges (start, stop inclusive, step), in the order given."""

    ranges: tuple[tuple[int, int, int], ...]

    @classmethod
    def parse(cls, text: str) -> Indices:
        """`0-999`, `0-999:2`, `1,3,5-7`: any mix. A repeated index is refused (each is one task)."""
        ranges: list[tuple[int, int, int]] = []
        for part in text.replace(" ", "").split(","):
            m = _PART.match(part)
            if not m:
                raise ValueError(f"bad array index {part!r}: use N, N-M or N-M:STEP, separated by commas")
            start = int(m.group(1))
            stop = int(m.group(2)) if m.group(2) is not None else start
            step = int(m.group(3)) if m.group(3) is not None else 1
            if stop < start or step < 1 or stop > MAX_INDEX:
                raise ValueError(f"bad array range {part!r}: N-M needs N <= M <= {MAX_INDEX}, STEP >= 1")
            ranges.append((start, stop - (stop - start) % step, step))
        out = cls(tuple(ranges))
        if len(out) > MAX_TASKS:
            raise ValueError(f"an array holds at most {MAX_TASKS:,} tasks ({len(out):,} asked)")
        for j in range(len(ranges)):
            for k in range(j + 1, len(ranges)):
                small, big = sorted((out._range(j), out._range(k)), key=len)
                twice = next((i for i in small if i in big), None)  # `in` a range is arithmetic
                if twice is not None:
                    raise ValueError(f"array index {twice} is listed twice")
        return out

    @staticmethod
    def _span(r: tuple[int, int, int]) -> int:
        return (r[1] - r[0]) // r[2] + 1

    def _range(self, j: int) -> range:
        a, b, s = self.ranges[j]
        return range(a, b + 1, s)

    def __len__(self) -> int:
        return sum(self._span(r) for r in self.ranges)

    def nth(self, pos: int) -> int:
        """The index at `pos` (0-based), in the order given."""
        for r in self.ranges:
            n = self._span(r)
            if pos < n:
                return r[0] + pos * r[2]
            pos -= n
        raise IndexError(pos)

    def position(self, index: int) -> int | None:
        """Where `index` is in the order given (None: not in the array)."""
        before = 0
        for j, r in enumerate(self.ranges):
            if index in self._range(j):
                return before + (index - r[0]) // r[2]
            before += self._span(r)
        return None

    def text(self) -> str:
        parts = []
        for a, b, s in self.ranges:
            parts.append(str(a) if a == b else f"{a}-{b}" + (f":{s}" if s != 1 else ""))
        return ",".join(parts)


def parse_array(text: str) -> tuple[Indices, int | None]:
    """`--array` as typed: the indices and the throttle after `%` (None: no limit)."""
    text = text.strip()
    throttle = None
    if "%" in text:
        text, _, limit = text.partition("%")
        if not limit.isdigit() or int(limit) < 1:
            raise ValueError(f"bad array throttle %{limit}: use %N, N >= 1 (at most N tasks run at once)")
        throttle = int(limit)
    return Indices.parse(text), throttle


def array_of(job_id: str) -> str | None:
    """The array a task id belongs to (`1234abcd5678_7` -> `1234abcd5678`), else None."""
    head, sep, tail = job_id.rpartition("_")
    return head if sep and tail.isdigit() else None


def task_id(array_id: str, index: int) -> str:
    """A task's job id, as Slurm's `1234_7`."""
    return f"{array_id}_{index}"


def substitute(words: list[str], index: int) -> list[str]:
    """`{index}` in a task's argv, as its index (other braces are left as they are)."""
    return [w.replace("{index}", str(index)) for w in words]


def task_fields(spec: dict[str, Any], array_id: str, index: int) -> dict[str, Any]:
    """A task's spec (as JSON) from its array's: `{index}` substituted in its argv, its index and
    array in its environment, no array of its own, and nothing to wait for (its array waited)."""
    task = {**spec, "array": None, "array_task": {"array_id": array_id, "index": index}, "dependencies": [],
            "after_notok": [], "after_any": [], "after_corr": [], "hold": False, "begin_at": None,
            "env": {**spec.get("env", {}), "SAGE_OPS_ARRAY_ID": array_id, "SAGE_OPS_ARRAY_INDEX": str(index)},
            "name": f"{spec['name'][:116]}_{index}" if spec.get("name") else None}
    for key in ("command", "args"):
        if spec.get(key):
            task[key] = substitute(spec[key], index)
    return task

"""Which columns of a DataTable fit a terminal's width: the one rule the jobs table and the
operator table share (drop columns in a given order until the rest fit, no sideways scrolling)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

PADDING = 2  # a DataTable cell's padding, both sides together
SCROLLBAR = 2

C = TypeVar("C", bound=tuple)


def used(columns: Sequence[tuple]) -> int:
    """Cells the columns take; each column is a tuple that starts with its key and ends with its width."""
    return sum(c[-1] + PADDING for c in columns) + SCROLLBAR


def fit(columns: Sequence[C], hide_first: Sequence[str], width: int) -> list[C]:
    """The columns, less those of `hide_first` (in that order) that must go to fit `width` cells."""
    shown = list(columns)
    for key in hide_first:
        if used(shown) <= width:
            break
        shown = [c for c in shown if c[0] != key]
    return shown

"""The one rule of a job-name filter, whoever asks (`jobs --name`, the TUI's `/`, bulk cancel and
retry): plain text matches anywhere in the name; a pattern with `*`, `?` or `[` is a glob over the
whole name (as in the shell); case never matters. kubectl's and k9s's filters are substrings too,
and a shell user's `sweep-*` keeps its shell meaning. The daemon applies it in SQL (name_clause,
duck-typed: nothing heavy is imported here); front ends use `matches` for rows that arrive live."""

from __future__ import annotations

import fnmatch
from typing import Any

WILD = "*?["


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in WILD)


def matches(name: str, pattern: str) -> bool:
    """The rule in Python, for rows that arrive without a query (the TUI's live updates)."""
    if is_glob(pattern):
        return fnmatch.fnmatchcase(name.lower(), pattern.lower())
    return pattern.lower() in name.lower()


def name_clause(column: Any, pattern: str) -> Any:
    """The SQL condition on `column`: a case-insensitive LIKE, or (with a character class) a
    case-insensitive regular expression (SQLite's REGEXP is Python's re, PostgreSQL's is `~*`)."""
    if "[" in pattern:
        return column.regexp_match(fnmatch.translate(pattern), flags="i")
    escaped = pattern.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
    like = escaped.replace("*", "%").replace("?", "_") if is_glob(pattern) else f"%{escaped}%"
    return column.ilike(like, escape="\\")


def prefix_range(pattern: str) -> tuple[str, str] | None:
    """[low, high) of the names a glob's literal prefix allows, whatever their case (a superset:
    the clause above still decides), if it has one; plain text matches anywhere, so it has none."""
    if not is_glob(pattern):
        return None
    prefix = pattern[:min(i for i in (pattern.find(c) for c in WILD) if i >= 0)]
    spellings = [(c, c.upper(), c.lower()) for c in prefix]
    if not prefix or any(len(s) != 1 for forms in spellings for s in forms):
        return None
    # every case variant of the prefix lies between its per-letter lowest and highest spelling
    low, high = "".join(min(f) for f in spellings), "".join(max(f) for f in spellings)
    if ord(high[-1]) >= 0x10FFFF:
        return None
    return low, high[:-1] + chr(ord(high[-1]) + 1)

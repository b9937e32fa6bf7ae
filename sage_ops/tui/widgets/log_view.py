"""A job's log lines, appended in batches, with follow/pause and search.

It keeps the plain text of the lines it shows (bounded), so a search can redraw them with the
matches highlighted and jump between matches without asking the daemon again."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from ...schemas import LogEntry

MAX_LINES = 20_000
STREAM_STYLE = {"stderr": "red", "system": "italic dim"}  # "red" is dropped under NO_COLOR (the mark stays)


def entry_line(entry: LogEntry) -> tuple[str, str]:
    """(text, style) of one entry: local time, then the message; stderr and system lines marked."""
    mark = "" if entry.stream == "stdout" else f"[{entry.stream}] "
    return f"{entry.timestamp.astimezone().strftime('%H:%M:%S')} {mark}{entry.message}", \
        STREAM_STYLE.get(entry.stream, "")


class LogView(RichLog):
    """Follows the end while `following`; `search()` highlights a text and jumps to it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_lines=MAX_LINES, wrap=False, highlight=False, markup=False, auto_scroll=True,
                         **kwargs)
        self.texts: deque[tuple[str, str]] = deque(maxlen=MAX_LINES)
        self.pattern = ""
        self.matches: list[int] = []
        self.current = -1

    @property
    def following(self) -> bool:
        return self.auto_scroll

    def follow(self, on: bool) -> None:
        self.auto_scroll = on
        if on:
            self.scroll_end(animate=False)

    def append(self, entries: Iterable[LogEntry]) -> None:
        """One write per batch: a flood of lines costs one layout, not one per line."""
        lines = [entry_line(e) for e in entries]
        if not lines:
            return
        start = len(self.texts)
        self.texts.extend(lines)
        if self.pattern:
            trimmed = start + len(lines) - len(self.texts)
            self.matches = [n - trimmed for n in self.matches if n >= trimmed]
            self.matches += [n for n in range(len(self.texts) - len(lines), len(self.texts))
                             if self.pattern in self.texts[n][0].lower()]
        self.write(self._render(lines))

    def _render(self, lines: Iterable[tuple[str, str]]) -> Text:
        out = Text()
        for n, (text, style) in enumerate(lines):
            if n:
                out.append("\n")
            line = Text(text, style="" if self.app.no_color and style == "red" else style)
            if self.pattern:
                line.highlight_words([self.pattern], style="reverse", case_sensitive=False)
            out.append_text(line)
        return out

    def search(self, pattern: str) -> int:
        """Highlight `pattern` (case-insensitive) and jump to its first match; returns the count."""
        self.pattern = pattern.lower()
        self.matches = [n for n, (text, _) in enumerate(self.texts) if self.pattern and self.pattern in text.lower()]
        self.current = -1
        self.clear()
        if self.texts:
            self.write(self._render(self.texts), scroll_end=False)
        if self.matches:
            self.follow(False)
            self.jump(1)
        return len(self.matches)

    def jump(self, step: int) -> int | None:
        """To the next (step 1) or previous (-1) match; returns its line number."""
        if not self.matches:
            return None
        self.current = (self.current + step) % len(self.matches)
        line = self.matches[self.current]
        self.scroll_to(y=max(0, line - self.scrollable_content_region.height // 2), animate=False)
        return line

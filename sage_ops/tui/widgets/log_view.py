"""A job's log lines, appended in batches, with follow/pause, search, wrap, timestamps and the choice
of one attempt's lines (k9s's log view: `w` wrap, `t` timestamps; the screen binds the keys).

It keeps the entries it was given (bounded) and the plain text of the lines it shows, so a search,
a toggle or another attempt redraws them without asking the daemon again. All attempts together
are shown as `sage-ops logs` prints them: a `── attempt N ──` line where a retry's lines begin."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from ...views import LogEntry

MAX_LINES = 20_000
STREAM_STYLE = {"stderr": "red", "system": "italic dim"}  # "red" is dropped under NO_COLOR (the mark stays)
MARK_STYLE = "bold"


def entry_line(entry: LogEntry, timestamps: bool = True) -> tuple[str, str]:
    """(text, style) of one entry: local time, then the message; stderr and system lines marked."""
    mark = "" if entry.stream == "stdout" else f"[{entry.stream}] "
    when = f"{entry.timestamp.astimezone().strftime('%H:%M:%S')} " if timestamps else ""
    return f"{when}{mark}{entry.message}", STREAM_STYLE.get(entry.stream, "")


def attempt_mark(number: int) -> tuple[str, str]:
    return f"── attempt {number} ──", MARK_STYLE


class LogView(RichLog):
    """Follows the end while `following`; `search()` highlights a text and jumps to it; `attempt`
    None shows every attempt's lines, a number only that attempt's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_lines=MAX_LINES, wrap=False, highlight=False, markup=False, auto_scroll=True,
                         **kwargs)
        self.entries: deque[LogEntry] = deque(maxlen=MAX_LINES)
        self.texts: deque[tuple[str, str]] = deque(maxlen=MAX_LINES)  # the lines shown, marks included
        self.timestamps = True
        self.attempt: int | None = None
        self.pattern = ""
        self.matches: list[int] = []
        self.current = -1
        self._last = 1  # the attempt of the last line shown: a mark goes where another begins

    @property
    def following(self) -> bool:
        return self.auto_scroll

    @property
    def attempts(self) -> list[int]:
        """The attempts the loaded lines belong to (0, the daemon's own notes, is none)."""
        return sorted({e.attempt for e in self.entries if e.attempt > 0})

    def follow(self, on: bool) -> None:
        self.auto_scroll = on
        if on:
            self.scroll_end(animate=False)

    def _lines(self, entries: Iterable[LogEntry]) -> list[tuple[str, str]]:
        """The lines `entries` add to what is shown: those of the chosen attempt, marks between attempts."""
        out = []
        for e in entries:
            if self.attempt is not None and e.attempt != self.attempt:
                continue
            if self.attempt is None and e.attempt > 0 and e.attempt != self._last:
                out.append(attempt_mark(e.attempt))
            if e.attempt > 0:
                self._last = e.attempt
            out.append(entry_line(e, self.timestamps))
        return out

    def append(self, entries: Iterable[LogEntry]) -> None:
        """One write per batch: a flood of lines costs one layout, not one per line."""
        entries = list(entries)
        self.entries.extend(entries)
        lines = self._lines(entries)
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

    def redraw(self) -> None:
        """Every loaded line again, as the toggles and the chosen attempt now say (the end stays in
        view while following)."""
        self._last = 1
        self.texts = deque(self._lines(self.entries), maxlen=MAX_LINES)
        self.matches = [n for n, (text, _) in enumerate(self.texts) if self.pattern and self.pattern in text.lower()]
        self.current = -1
        self.clear()
        if self.texts:
            self.write(self._render(self.texts), scroll_end=self.following)

    def set_wrap(self, on: bool) -> None:
        self.wrap = on
        self.redraw()

    def set_timestamps(self, on: bool) -> None:
        self.timestamps = on
        self.redraw()

    def show_attempt(self, attempt: int | None) -> None:
        self.attempt = attempt
        self.redraw()

    def search(self, pattern: str) -> int:
        """Highlight `pattern` (case-insensitive) and jump to its first match; returns the count."""
        self.pattern = pattern.lower()
        self.redraw()
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

"""Progress of long operations (node bootstraps, waiting on many jobs): rich bars on a terminal,
plain lines on stderr otherwise (logs and CI read those), never on stdout (that is for data)."""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import Any

import click


class Progress:
    """Several items, each moving through `steps` steps. Thread-safe: workers report from threads."""

    def __init__(self, steps: int, tty: bool | None = None) -> None:
        self.steps = steps
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Progress:
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bars

            from ..render import console

            self._bars = Bars(TextColumn("{task.fields[item]:<20}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.description}"), TimeElapsedColumn(), console=console(err=True),
                              transient=False)
            self._bars.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._bars is not None:
            self._bars.stop()

    def add(self, item: str, total: int | None = None) -> None:
        with self._lock:
            if self._bars is not None and item not in self._tasks:
                self._tasks[item] = self._bars.add_task("waiting", item=item, total=total or self.steps)

    def update(self, item: str, text: str, done: int | None = None, line: str | None = None) -> None:
        """Show `text` for the item; `done` steps completed. Without a terminal, print `line`
        (or `item: text`) on stderr."""
        with self._lock:
            if self._bars is None:
                click.echo(line or f"{item}: {text}", err=True)
                return
            task = self._tasks.get(item)
            if task is None:
                task = self._tasks[item] = self._bars.add_task(text, item=item, total=self.steps)
            self._bars.update(task, description=text, **({} if done is None else {"completed": done}))

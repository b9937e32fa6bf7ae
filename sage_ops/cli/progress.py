"""Progress of long operations (node bootstraps, waiting on many jobs): rich bars on a terminal,
plain lines on stderr otherwise (logs and CI read those), never on stdout (that is for data).
Also how a wait ends: the exit status it passes on, and what Ctrl-C says (the job runs on)."""

from __future__ import annotations

import contextlib
import shlex
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import click

from ..lifecycle import TERMINAL  # JobStatus is a str enum: the daemon's JSON strings are found in it
from . import EXIT_CANCELLED, EXIT_INTERRUPTED, EXIT_NO_CODE, EXIT_WAIT_TIMEOUT, Ctx


def exit_status(job: dict[str, Any]) -> int:
    """What a command that waited for `job` exits with, as srun and `docker run` do: the job's
    own code; 143 (128+SIGTERM, `docker run` after `docker stop`) if it was cancelled; 125 if it
    ended without a code of its own (rejected, could not be placed, its node lost); 124 (GNU
    timeout's) if it has not ended: the wait timed out."""
    status, code = job["status"], job.get("exit_code")
    if status == "COMPLETED":
        return 0
    if status == "CANCELLED":
        return EXIT_CANCELLED
    if status not in TERMINAL:
        return EXIT_WAIT_TIMEOUT
    return code if isinstance(code, int) and 0 < code < 256 else EXIT_NO_CODE


def first_failure(jobs: Iterable[dict[str, Any]]) -> int:
    """Several jobs: the status of the first (in the order given) that did not complete, else 0."""
    return next((s for s in map(exit_status, jobs) if s), 0)


def cancel_command(ctx: Ctx, ids: Iterable[str]) -> str:
    """The exact command that cancels `ids` on the same daemon (never with a token in it)."""
    where = ["--address", ctx.address] if ctx.address else []
    return shlex.join(["sage-ops", *where, "cancel", *ids])


@contextlib.contextmanager
def keeps_running(ctx: Ctx, running: Callable[[], list[str]]) -> Iterator[None]:
    """Ctrl-C while following or waiting stops the watching, not the job: say so in one line,
    with the command that does stop it, and exit 130 as a shell does for SIGINT."""
    try:
        yield
    except KeyboardInterrupt:
        ids = running()
        if ids:
            them = f"job {ids[0]} keeps" if len(ids) == 1 else f"jobs {' '.join(ids)} keep"
            click.echo(("\n" if sys.stderr.isatty() else "") + f"interrupted: {them} running; to cancel: "
                       f"{cancel_command(ctx, ids)}", err=True)
        sys.exit(EXIT_INTERRUPTED)


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

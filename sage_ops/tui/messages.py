"""Typed messages the TUI's workers post (Harlequin style): workers fetch, handlers draw.

High-frequency messages coalesce (Toolong style): when the UI lags, a newer message takes the
changes of the older one still queued (`can_replace`), so a burst of events costs a few redraws."""

from __future__ import annotations

from textual.message import Message

from ..telemetry import Health, Stats
from ..views import JobChange, JobEventView, JobView, LogEntry


class JobsChanged(Message, bubble=False):
    """Jobs' changes of state from the daemon's event stream, batched (~100 ms per message)."""

    def __init__(self, changes: list[JobChange]) -> None:
        super().__init__()
        self.changes = changes

    def can_replace(self, message: Message) -> bool:
        # Textual asks the queued (older) message whether the next one may replace it: hand our
        # changes over to it, in order, so none is lost when the two merge.
        if isinstance(message, JobsChanged):
            message.changes[:0] = self.changes
            return True
        return False


class Failed(Message, bubble=False):
    """A screen's own request failed: `text` is the one line it shows (every screen posts it to
    itself from its workers)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class Resync(Message, bubble=False):
    """What is shown may be stale (events were lost, or the daemon came back): reload it."""


class Reconnecting(Message):
    """The daemon is unreachable; the event worker retries with backoff."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Reconnecting)


class Reconnected(Message):
    """The daemon answers again; the event stream resumes after the last seq seen."""


class ClusterInfo(Message):
    """The header's figures: health (role, Ray resources) and job counts; None when unreachable."""

    def __init__(self, health: Health | None, stats: Stats | None, error: str | None = None) -> None:
        super().__init__()
        self.health, self.stats, self.error = health, stats, error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ClusterInfo)


class JobsPage(Message):
    """One page of `list_jobs` for the jobs table; `generation` drops pages of an older filter."""

    def __init__(self, generation: int, index: int, jobs: list[JobView], next_cursor: str | None) -> None:
        super().__init__()
        self.generation, self.index, self.jobs, self.next_cursor = generation, index, jobs, next_cursor


class JobsFetched(Message):
    """Jobs the table did not hold yet (new, or now matching the filter), fetched one by one."""

    def __init__(self, generation: int, jobs: list[JobView]) -> None:
        super().__init__()
        self.generation, self.jobs = generation, jobs


class JobLoaded(Message):
    """A job's full record for the detail screen: the view, its events and its result."""

    def __init__(self, job: JobView, events: list[JobEventView], result: object) -> None:
        super().__init__()
        self.job, self.events, self.result = job, events, result


class LogLines(Message):
    """Log entries of the followed job, batched; merges with a queued batch like JobsChanged."""

    def __init__(self, entries: list[LogEntry]) -> None:
        super().__init__()
        self.entries = entries

    def can_replace(self, message: Message) -> bool:
        if isinstance(message, LogLines):
            message.entries[:0] = self.entries
            return True
        return False


class LogEnded(Message):
    """The log stream ended: the job is over (or the stream failed, with a reason)."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__()
        self.reason = reason

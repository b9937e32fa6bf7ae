"""The cluster at a glance, on top of every main screen: nodes, CPU/GPU/memory in use, job
counts, the daemon's role and address, and "reconnecting…" while the daemon is away.

The app polls the daemon on a timer (one worker for all headers) and sets `app.cluster`; each
header watches that and the app's `link` state, so a header never calls the daemon itself."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from ...lifecycle import JobStatus
from ...render import STATUS_STYLE
from ..messages import ClusterInfo
from .job_table import tint


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f}"


def _used(avail: dict[str, float], total: dict[str, float], key: str) -> tuple[float, float]:
    have = total.get(key, 0.0)
    return max(0.0, have - avail.get(key, 0.0)), have


def cluster_line(info: ClusterInfo | None, address: str, plain: bool = False) -> Text:
    """Line 1: the daemon's role, what the cluster holds and in use, and where the daemon is."""
    line = Text()
    line.append("sage-ops ", style="bold")
    h = info.health if info else None
    if h is not None:
        line.append(f"{h.role} ", style=tint("bold green" if h.role == "leader" else "bold yellow", plain))
    if h is None:
        line.append(address, style="dim")
        return line
    r = h.ray
    if not r.connected:
        line.append("ray: not connected  ", style=tint("bold red", plain))
        line.append(address, style="dim")
        return line
    cpu, cpu_all = _used(r.available, r.resources, "CPU")
    gpu, gpu_all = _used(r.available, r.resources, "GPU")
    mem, mem_all = _used(r.available, r.resources, "memory")
    line.append(f"nodes {r.nodes}  cpu {cpu:g}/{cpu_all:g}")
    if gpu_all:
        line.append(f"  gpu {gpu:g}/{gpu_all:g}")
    if mem_all:
        line.append(f"  mem {_gib(mem)}/{_gib(mem_all)}G")
    line.append(f"  {address}", style="dim")  # last: the first thing to go on a narrow terminal
    return line


def jobs_line(info: ClusterInfo | None, link: str, plain: bool = False) -> Text:
    """Line 2: job counts by state, or why the daemon cannot be reached."""
    line = Text()
    if link:
        line.append("reconnecting… ", style=tint("bold red", plain))
        line.append(link, style="dim")
        return line
    s = info.stats if info else None
    if s is None:
        line.append(info.error if info and info.error else "connecting…", style="dim")
        return line
    for label, count, status in (("running", s.running_jobs, JobStatus.RUNNING),
                                 ("pending", s.queue_depth, JobStatus.PENDING),
                                 ("failed in 1h", s.failed_last_hour, JobStatus.FAILED)):
        line.append(f"{count} ", style=tint(STATUS_STYLE[status], plain))
        line.append(f"{label}  ")
    line.append(f"{s.total_jobs} jobs", style="dim")
    return line


class ClusterHeader(Static):
    """Two lines; redrawn when the app's cluster figures or link state change."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)

    def on_mount(self) -> None:
        self.watch(self.app, "cluster", self._redraw, init=False)
        self.watch(self.app, "link", self._redraw, init=False)
        self._redraw()

    def _redraw(self, *_: Any) -> None:
        app: Any = self.app
        info: ClusterInfo | None = getattr(app, "cluster", None)
        one = cluster_line(info, getattr(app, "address", ""), app.no_color)
        two = jobs_line(info, getattr(app, "link", ""), app.no_color)
        self.update(Text("\n").join([one, two]), layout=False)  # two lines always: no reflow

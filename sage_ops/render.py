"""How the CLI shows things: rich tables for people, the API's own JSON for scripts."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from .access import AuditEntry, TenantView, TokenView
from .cluster import NodeProgress, NodeView, PoolEventView, PoolView
from .formats import print_json  # noqa: F401 - the CLI's commands print through render
from .lifecycle import JobStatus
from .pipeline.shapes import PipelineView
from .plaintext import STATUS_STYLE, ago, binary_size, duration, headline, stamp
from .telemetry import Health, Stats
from .views import BulkResult, GraphView, JobEventView, JobView

NODE_STYLE = {"JOINING": "cyan", "UP": "green", "FAILED": "bold red", "DRAINING": "yellow", "DRAINED": "magenta",
              "DOWN": "bold red"}


def console(err: bool = False) -> Console:
    stream = sys.stderr if err else sys.stdout
    width = None if stream.isatty() else 200  # piped output: never cut columns to 80
    plain = bool(os.environ.get("NO_COLOR"))  # no-color.org: no escape codes at all, bold included
    return Console(stderr=err, highlight=False, soft_wrap=False, width=width,
                   color_system=None if plain else "auto")


def status_text(status: JobStatus) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status.value}[/]"


def job_detail_attempts(job: JobView) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold", title="attempts", title_justify="left")
    for col in ("#", "STATUS", "NODE", "PID", "STARTED", "RUNTIME", "CPU", "MAX RSS", "EXIT", "REASON"):
        table.add_column(col)
    for a in job.attempts:
        secs = ((a.ended_at or datetime.now(timezone.utc)) - a.started_at).total_seconds() if a.started_at else None
        table.add_row(str(a.number), status_text(a.status), a.node or "-", str(a.pid or "-"), stamp(a.started_at),
                      duration(secs), duration(a.cpu_seconds), binary_size(a.max_rss_bytes),
                      "-" if a.exit_code is None else str(a.exit_code), headline(a.reason))
    console().print(table)


def events_table(events: Iterable[JobEventView]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("TIME", "FROM", "TO", "ATTEMPT", "REASON"):
        table.add_column(col)
    for e in events:
        table.add_row(stamp(e.time), e.from_status.value if e.from_status else "-", status_text(e.to_status),
                      str(e.attempt or "-"), headline(e.reason))
    console().print(table)


def health(h: Health) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    ok = "[green]ok[/]" if h.status == "ok" else "[bold red]degraded[/]"
    grid.add_row("status", ok)
    grid.add_row("daemon", f"pid {h.pid}, version {h.version}, up {duration(h.uptime_s)}")
    lead = h.leader
    if lead:
        grid.add_row("role", f"[bold]{h.role}[/]; leader {lead.get('address') or lead.get('holder')} (epoch "
                     f"{lead.get('epoch')}, lease renewed {lead.get('lease_age_s')}s ago, expires in "
                     f"{lead.get('expires_in_s')}s)")
    else:
        grid.add_row("role", f"[bold]{h.role}[/] (single node)")
    grid.add_row("listening", ", ".join(x for x in (f"unix://{h.socket}" if h.socket else None,
                                                     f"tcp://{h.tcp}" if h.tcp else None) if x))
    db = h.database
    grid.add_row("database", f"{'[green]ok[/]' if db.get('ok') else '[red]down[/]'} {db.get('url', '')}"
                 + (f" ({db['latency_ms']} ms)" if "latency_ms" in db else "") + (f" {db.get('detail')}" if
                                                                                  db.get("detail") else ""))
    if h.storage:
        grid.add_row("storage", _storage(h.storage))
    r = h.ray
    if r.connected:
        res = ", ".join(f"{k}={_num(r.available.get(k, 0))}/{_num(v)}" for k, v in sorted(r.resources.items())
                        if k in ("CPU", "GPU", "memory") or not k.startswith("object_store"))
        grid.add_row("ray", f"[green]connected[/] {r.address} ({r.nodes} node{'s' if r.nodes != 1 else ''}"
                     f"{', started by the daemon' if r.started_by_daemon else ''}"
                     f"{f', {r.executors} executor' + ('s' if r.executors != 1 else '') if r.executors else ''})")
        grid.add_row("resources", f"free/total: {res}")
    else:
        grid.add_row("ray", f"[red]not connected[/] {r.address or ''} {r.detail or ''}")
    if h.identity:
        grid.add_row("identity", h.identity)
    if h.containment:
        grid.add_row("containment", h.containment)
    console().print(grid)


def _storage(s: dict[str, Any]) -> str:
    """Where jobs' files live, and whether the shared store keeps up."""
    if not s.get("shared"):
        return f"{s.get('url')} (this machine only: no storage.url)"
    state = f"[red]upload failing[/]: {s['error']}" if s.get("error") else "[green]ok[/]"
    waiting = s.get("waiting_logs") or 0
    return f"{state} {s.get('url')}" + (f" ({waiting} job log(s) waiting to upload)" if waiting else "")


def stats(s: Stats) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("STATUS")
    table.add_column("JOBS", justify="right")
    for status, n in s.by_status.items():
        table.add_row(status_text(JobStatus(status)), str(n))
    console().print(table)
    console().print(f"total {s.total_jobs}, active {s.active_jobs}/{s.max_jobs}, queued {s.queue_depth} "
                    f"({s.waiting_jobs} waiting for dependencies, {s.retrying_jobs} in retry backoff), "
                    f"running {s.running_jobs}, failed in the last hour {s.failed_last_hour}")


def graph(g: GraphView) -> None:
    """The DAG as a tree from its roots; a job with several dependencies is drawn under the first
    and names the others; the critical path is marked with *."""
    by_id = {n.id: n for n in g.nodes}
    children: dict[str, list[str]] = {}
    for n in g.nodes:
        if n.dependencies:
            children.setdefault(n.dependencies[0], []).append(n.id)

    def label(job_id: str) -> str:
        n = by_id[job_id]
        mark = "[bold yellow]*[/] " if n.critical else "  "
        also = f" [dim](also after {', '.join(n.dependencies[1:])})[/]" if len(n.dependencies) > 1 else ""
        took = f" {duration(n.duration)}" if n.duration else ""
        root = " [bold]<[/]" if job_id == g.root else ""
        return f"{mark}{n.id} {n.name} {status_text(n.status)}{took}{also}{root}"

    head = (f"{g.done}/{g.total} done: {g.completed} completed, {g.running} running, {g.pending} pending, "
            f"{g.failed} failed, {g.cancelled} cancelled/rejected")
    tree = Tree(head, guide_style="dim")

    def add(parent: Tree, job_id: str) -> None:
        branch = parent.add(label(job_id))
        for c in children.get(job_id, []):
            add(branch, c)

    for n in g.nodes:
        if not n.dependencies or n.dependencies[0] not in by_id:
            add(tree, n.id)
    out = console()
    if g.pipeline is not None:
        pipeline(g.pipeline)
        if len(g.nodes) == 1:
            return  # a pipeline on its own: its operators are the graph
        out.print()
    out.print(tree)
    path = " -> ".join(by_id[j].name for j in g.critical_path)
    out.print(f"critical path (*): {path}  ({duration(sum(by_id[j].duration for j in g.critical_path))})")


OPERATOR_COLUMNS = ("#", "OPERATOR", "TASK", "PAR", "INPUT", "IN", "OUT", "IN/S", "OUT/S", "BUSY", "BACKPRESSURE")


def count(n: float) -> str:
    """12345678 -> 12.3M: counts and rates that stay narrow in a table."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def operator_rows(p: PipelineView) -> list[tuple[str, ...]]:
    """One row per operator (the CLI's table and the TUI's): where it runs and what it did."""
    rows = []
    for o in p.plan.operators:
        m = p.metrics_of(o.id)
        rows.append((str(o.id), o.name, f"t{o.task}", str(o.parallelism),
                     o.partitioning.value if o.partitioning else "-", count(m.records_in), count(m.records_out),
                     count(m.rate_in), count(m.rate_out), f"{m.busy_seconds:.1f}s", f"{m.backpressure_seconds:.1f}s"))
    return rows


def task_lines(p: PipelineView) -> list[str]:
    """The fused tasks: each is one Ray actor per instance."""
    return [f"t{t.id} x{t.parallelism}: {t.name}" for t in p.plan.tasks]


def pipeline(p: PipelineView) -> None:
    out = console()
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in OPERATOR_COLUMNS:
        table.add_column(name, justify="right" if name in ("#", "PAR", "IN", "OUT", "IN/S", "OUT/S") else "left",
                         no_wrap=True)
    for row in operator_rows(p):
        table.add_row(*row)
    out.print(table)
    when = f", metrics of attempt {p.attempt} at {stamp(p.updated_at)}" if p.updated_at else ", no metrics yet"
    out.print(f"[dim]{len(p.plan.tasks)} tasks, {p.plan.actors()} actors{when}[/]")
    for line in task_lines(p):
        out.print(f"  {line}", markup=False)


def history(job: JobView, events: Iterable[JobEventView]) -> None:
    console().print(f"[bold]{job.id}[/] {job.name} {status_text(job.status)}")
    events_table(events)
    if job.attempts:
        job_detail_attempts(job)


def bulk(result: BulkResult, verb: str) -> None:
    for ref in result.affected:
        console().print(f"{ref.id} {ref.name} {status_text(ref.status)}")
    for ref in result.cascaded:
        console().print(f"{ref.id} {ref.name} {status_text(ref.status)} (dependent)")
    if result.affected or not result.errors:  # a lone error stays one line
        console(err=True).print(f"{verb} {len(result.affected)} job(s)"
                                + (f" and {len(result.cascaded)} dependent(s)" if result.cascaded else ""))
    for e in result.errors:
        console(err=True).print(f"error: {e['message']}", markup=False)


def _num(v: float) -> str:
    if v >= 2**30:
        return f"{v / 2**30:.1f}GiB"
    return f"{v:g}"


def _limit(value: float | None, used: float | None = None) -> str:
    if value is None:
        return "-" if used is None else f"{used:g}"
    return f"{value:g}" if used is None else f"{used:g}/{value:g}"


def tenants(items: Sequence[TenantView]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("TENANT", "RUNNING", "CPU", "GPU", "QUEUED", "WEIGHT", "USERS", "RUN AS"):
        table.add_column(col, no_wrap=True)
    for t in items:
        q = t.quotas
        table.add_row(t.name, _limit(q.max_running, t.running_jobs), _limit(q.max_cpu, t.cpu_in_use),
                      _limit(q.max_gpu, t.gpu_in_use), _limit(q.max_queued, t.queued_jobs), f"{q.weight:g}",
                      ",".join(map(str, t.users)) or "-", t.run_as or "-")
    console().print(table)


def tokens(items: Sequence[TokenView]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("ID", "NAME", "TENANT", "ROLE", "RATE", "CREATED", "LAST USED", "EXPIRES", "REVOKED"):
        table.add_column(col, no_wrap=True)
    for t in items:
        table.add_row(str(t.id), t.name, t.tenant or "*", t.role.value, _limit(t.rate_limit), ago(t.created_at),
                      ago(t.last_used_at), t.expires_at.astimezone().strftime("%Y-%m-%d %H:%M") if t.expires_at
                      else "-", ago(t.revoked_at))
    console().print(table)


def audit(events: Sequence[AuditEntry]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("TIME", "ACTOR", "TENANT", "ACTION", "TARGET", "STATUS", "DETAIL"):
        table.add_column(col, no_wrap=col != "DETAIL", overflow="ellipsis")
    for e in events:
        style = "red" if e.status >= 400 else ""
        table.add_row(e.time.astimezone().strftime("%Y-%m-%d %H:%M:%S"), e.actor, e.tenant or "-", e.action,
                      e.target or "-", f"[{style}]{e.status}[/]" if style else str(e.status), e.detail or "")
    console().print(table)


def _used(used: float, total: float, gib: bool = False) -> str:
    if not total:
        return "-"
    if gib:
        return f"{used / 2**30:.1f}/{total / 2**30:.1f}GiB"
    return f"{used:g}/{total:g}"


def nodes(items: Sequence[NodeView]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("NODE", "STATE", "CPU", "MEMORY", "GPU", "JOBS", "HEARTBEAT", "ADDRESS", "RESOURCES", "DETAIL"):
        table.add_column(col, no_wrap=col != "DETAIL", overflow="ellipsis")
    for n in items:
        name = n.name + (" (head)" if n.head else "") + ("" if n.managed else " *")
        where = n.address or (f"{n.user + '@' if n.user else ''}{n.host}" if n.host else "-")
        table.add_row(name, f"[{NODE_STYLE.get(n.state, '')}]{n.state}[/]", _used(n.cpu_used, n.cpu_total),
                      _used(n.memory_used, n.memory_total, gib=True), _used(n.gpu_used, n.gpu_total),
                      str(n.running_jobs), "-" if n.heartbeat_age_s is None else duration(n.heartbeat_age_s) + " ago",
                      where, ",".join(f"{k}={v:g}" for k, v in sorted(n.resources.items())) or "-", n.detail or "")
    console().print(table)
    if any(not n.managed for n in items):
        console().print("[dim]* not added by sage-ops[/]")


def pools(items: Sequence[PoolView]) -> None:
    """`sage-ops pools`: a line per pool, then its nodes."""
    if not items:
        console().print("no pools (nodes.pools in the daemon's config)")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("POOL", "UP", "JOINING", "IDLE", "MIN", "MAX", "WANTS", "WAITING JOBS", "LAST"):
        table.add_column(col, no_wrap=col != "LAST", overflow="fold")
    for p in items:
        table.add_row(p.name, str(p.up), str(p.joining), str(p.idle), str(p.min), str(p.max), str(p.desired),
                      str(p.waiting_jobs), p.last or "-")
    console().print(table)
    for p in items:
        for n in p.nodes:
            idle = f", idle {duration(n.idle_s)}" if n.idle_s is not None else ""
            console().print(f"  {p.name}: {n.name} {n.state}, {n.running_jobs} job(s){idle}")
        for host, why in p.set_aside.items():
            console().print(f"  {p.name}: {host} set aside: {why}")


def pool_events(items: Sequence[PoolEventView]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("TIME", "EVENT", "HOST", "REASON"):
        table.add_column(col, no_wrap=col != "REASON", overflow="fold")
    for e in items:
        table.add_row(e.time.astimezone().strftime("%Y-%m-%d %H:%M:%S"), e.kind, e.host or "-", e.reason)
    console().print(table)


def progress_line(p: NodeProgress) -> str:
    """A step of a node operation, for logs and pipes: `node: step state detail`."""
    return f"{p.node}: {p.step} {p.state}" + (f" - {p.detail}" if p.detail else "")

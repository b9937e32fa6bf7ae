"""How the CLI shows things: rich tables for people, the API's own JSON for scripts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from .access import AuditEntry, TenantView, TokenView
from .cluster import NodeProgress, NodeView
from .lifecycle import JobStatus
from .pipeline.shapes import PipelineView
from .schemas import BulkResult, GraphView, JobEventView, JobView, LogEntry
from .telemetry import Health, Stats

NODE_STYLE = {"JOINING": "cyan", "UP": "green", "FAILED": "bold red", "DRAINING": "yellow", "DRAINED": "magenta",
              "DOWN": "bold red"}
STATUS_STYLE = {
    JobStatus.SUBMITTED: "cyan", JobStatus.PENDING: "yellow", JobStatus.RUNNING: "bold blue",
    JobStatus.COMPLETED: "green", JobStatus.FAILED: "bold red", JobStatus.CANCELLED: "magenta",
    JobStatus.REJECTED: "red",
}


def console(err: bool = False) -> Console:
    stream = sys.stderr if err else sys.stdout
    width = None if stream.isatty() else 200  # piped output: never cut columns to 80
    plain = bool(os.environ.get("NO_COLOR"))  # no-color.org: no escape codes at all, bold included
    return Console(stderr=err, highlight=False, soft_wrap=False, width=width,
                   color_system=None if plain else "auto")


# -- machine formats (-o json|yaml|name; --json) -----------------------------------------------
def plain(obj: Any) -> Any:
    """JSON-ready data of a model, a list of models or plain data: times in ISO-8601 UTC, enums as
    their values (the same field names and values as the API's JSON)."""
    if isinstance(obj, BaseModel):
        return plain(obj.model_dump(mode="python"))
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(o) for o in obj]
    if isinstance(obj, datetime):
        moment = obj if obj.tzinfo else obj.astimezone()  # a naive time is local
        return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(obj, Enum):
        return obj.value
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)  # paths, UUIDs, decimals: as the API's JSON prints them


def name_of(item: Any) -> str:
    """What `-o name` prints of an object: its id, else its name."""
    for key in ("id", "name", "check"):
        value = item.get(key) if isinstance(item, dict) else getattr(item, key, None)
        if value is not None:
            return str(value)
    return str(item)


def dumps(obj: Any, fmt: str) -> str:
    """The text of `obj` in a machine format (no trailing newline)."""
    data = plain(obj)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    if fmt == "name":
        items = obj if isinstance(obj, (list, tuple)) else [obj]
        return "\n".join(name_of(i) for i in items)
    raise ValueError(f"not a machine format: {fmt}")


def print_json(obj: BaseModel | Sequence[BaseModel] | Any) -> None:
    sys.stdout.write(dumps(obj, "json") + "\n")


def status_text(status: JobStatus) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status.value}[/]"


def ago(ts: datetime | None, now: datetime | None = None) -> str:
    if ts is None:
        return "-"
    secs = ((now or datetime.now(timezone.utc)) - ts).total_seconds()
    return duration(secs) + " ago"


def duration(secs: float | None) -> str:
    if secs is None:
        return "-"
    secs = max(0.0, secs)
    if secs < 60:
        return f"{secs:.1f}s" if secs < 10 else f"{secs:.0f}s"
    if secs < 3600:
        return f"{int(secs // 60)}m{int(secs % 60):02d}s"
    if secs < 86400:
        return f"{int(secs // 3600)}h{int(secs % 3600 // 60):02d}m"
    return f"{int(secs // 86400)}d{int(secs % 86400 // 3600):02d}h"


def headline(reason: str | None) -> str:
    """A reason's first line, for tables: a pipeline's error carries a whole traceback, which
    belongs in `status`, not in every row of a listing."""
    return (reason or "").split("\n", 1)[0]


def run_time(job: JobView) -> float | None:
    if job.started_at is None:
        return None
    end = job.ended_at or datetime.now(timezone.utc)
    return (end - job.started_at).total_seconds()


def jobs_table(jobs: Iterable[JobView], wide: bool = False) -> None:
    """`wide` adds tenant, resources, attempts and the creation time itself (-o wide)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    cols = ["ID", "NAME", "STATUS", "PRI", "NODE", "CREATED", "RUNTIME", "EXIT", "REASON"]
    if wide:
        cols[4:4] = ["TENANT", "RESOURCES", "ATTEMPTS"]
        cols.insert(cols.index("CREATED") + 1, "CREATED AT")
    for col in cols:
        table.add_column(col, no_wrap=col != "REASON", overflow="ellipsis")
    for j in jobs:
        row = [j.id, j.name, status_text(j.status), str(j.priority), j.node or "-", ago(j.created_at),
               duration(run_time(j)), "-" if j.exit_code is None else str(j.exit_code), headline(j.reason)]
        if wide:
            res = j.spec.resources if j.spec else None
            row[4:4] = [j.tenant or "-", "-" if res is None else f"cpu={res.cpu:g} gpu={res.gpu:g}",
                        str(j.attempts_made)]
            row.insert(cols.index("CREATED AT"), _ts(j.created_at))
        table.add_row(*row)
    console().print(table)


def job_detail(job: JobView) -> None:
    out = console()
    rows: list[tuple[str, str]] = [
        ("id", job.id), ("name", job.name), ("status", status_text(job.status)), ("reason", job.reason or "-"),
        ("kind", job.kind.value), ("priority", str(job.priority)), ("node", job.node or "-"),
        ("exit code", "-" if job.exit_code is None else str(job.exit_code)),
        ("created", _ts(job.created_at)), ("started", _ts(job.started_at)), ("ended", _ts(job.ended_at)),
        ("runtime", duration(run_time(job))),
    ]
    if job.spec is not None:
        s = job.spec
        what = (f"{s.script.filename} {' '.join(s.args)}".strip() if s.script else " ".join(s.command))
        if s.pipeline is not None:
            what = f"pipeline: {len(s.pipeline.plan.operators)} operators, {s.pipeline.payload_bytes} bytes of code"
        res = s.resources
        mem = f", memory={res.memory / 2**20:.0f}MiB" if res.memory else ""
        custom = "".join(f", {k}={v:g}" for k, v in res.custom_resources.items())
        rp = s.retry_policy
        rows += [("command", what), ("resources", f"cpu={res.cpu:g}, gpu={res.gpu:g}{mem}{custom}"),
                 ("working dir", s.working_dir or "-"), ("after", ", ".join(s.dependencies) or "-"),
                 ("retries", f"{rp.max_retries} (delay {rp.retry_delay:g}s x {rp.retry_exponential_base:g}^n, "
                             f"cap {rp.max_delay:g}s)" if rp.max_retries else "0"),
                 ("timeout", f"{s.timeout:g}s" if s.timeout else "daemon default")]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for k, v in rows:
        grid.add_row(k, v)
    out.print(grid)
    if job.attempts:
        job_detail_attempts(job)
    if job.pipeline is not None:
        out.print()
        pipeline(job.pipeline)


def job_detail_attempts(job: JobView) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold", title="attempts", title_justify="left")
    for col in ("#", "STATUS", "NODE", "PID", "STARTED", "RUNTIME", "EXIT", "REASON"):
        table.add_column(col)
    for a in job.attempts:
        secs = ((a.ended_at or datetime.now(timezone.utc)) - a.started_at).total_seconds() if a.started_at else None
        table.add_row(str(a.number), status_text(a.status), a.node or "-", str(a.pid or "-"), _ts(a.started_at),
                      duration(secs), "-" if a.exit_code is None else str(a.exit_code), headline(a.reason))
    console().print(table)


def events_table(events: Iterable[JobEventView]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("TIME", "FROM", "TO", "ATTEMPT", "REASON"):
        table.add_column(col)
    for e in events:
        table.add_row(_ts(e.time), e.from_status.value if e.from_status else "-", status_text(e.to_status),
                      str(e.attempt or "-"), headline(e.reason))
    console().print(table)


def log_line(entry: LogEntry, timestamps: bool = True) -> str:
    prefix = ""
    if timestamps:
        prefix = entry.timestamp.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " "
    if entry.stream != "stdout":
        prefix += f"[{entry.stream}] "
    return prefix + entry.message


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
    r = h.ray
    if r.connected:
        res = ", ".join(f"{k}={_num(r.available.get(k, 0))}/{_num(v)}" for k, v in sorted(r.resources.items())
                        if k in ("CPU", "GPU", "memory") or not k.startswith("object_store"))
        grid.add_row("ray", f"[green]connected[/] {r.address} ({r.nodes} node{'s' if r.nodes != 1 else ''}"
                     f"{', started by the daemon' if r.started_by_daemon else ''})")
        grid.add_row("resources", f"free/total: {res}")
    else:
        grid.add_row("ray", f"[red]not connected[/] {r.address or ''} {r.detail or ''}")
    console().print(grid)


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
    when = f", metrics of attempt {p.attempt} at {_ts(p.updated_at)}" if p.updated_at else ", no metrics yet"
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


def _ts(ts: datetime | None) -> str:
    return "-" if ts is None else ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")


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
    for col in ("TENANT", "RUNNING", "CPU", "GPU", "QUEUED", "WEIGHT", "USERS"):
        table.add_column(col, no_wrap=True)
    for t in items:
        q = t.quotas
        table.add_row(t.name, _limit(q.max_running, t.running_jobs), _limit(q.max_cpu, t.cpu_in_use),
                      _limit(q.max_gpu, t.gpu_in_use), _limit(q.max_queued, t.queued_jobs), f"{q.weight:g}",
                      ",".join(map(str, t.users)) or "-")
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


def progress_line(p: NodeProgress) -> str:
    """A step of a node operation, for logs and pipes: `node: step state detail`."""
    return f"{p.node}: {p.step} {p.state}" + (f" - {p.detail}" if p.detail else "")

"""The CLI's tables for people without rich: `jobs`, `status` and `logs` print the daemon's JSON as
plain aligned text (bold headers and coloured statuses on a terminal, never under NO_COLOR or into
a pipe). Rich costs ~30 ms to import; these commands must answer in less than a tenth of a second.
The same columns and look as render.py's rich tables, which other commands still use."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

STATUS_STYLE = {"SUBMITTED": "cyan", "PENDING": "yellow", "RUNNING": "bold blue", "COMPLETED": "green",
                "FAILED": "bold red", "CANCELLED": "magenta", "REJECTED": "red"}
SGR = {"bold": "1", "red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35", "cyan": "36"}
GAP = "  "


def coloured(stream: TextIO) -> bool:
    """Colour only on a terminal that has it, and never under NO_COLOR (no-color.org)."""
    return (stream.isatty() and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM", "") not in ("dumb", "unknown"))


def paint(text: str, style: str, on: bool) -> str:
    """`text` in a rich-style spec ("bold red"), as ANSI SGR codes when `on`."""
    codes = [SGR[w] for w in style.split() if w in SGR]
    return f"\x1b[{';'.join(codes)}m{text}\x1b[0m" if on and codes else text


def width_of(stream: TextIO) -> int | None:
    """The terminal's width (COLUMNS first, as rich reads it); None into a pipe (never cut)."""
    if not stream.isatty():
        return None
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except OSError:
            return None


# -- values ------------------------------------------------------------------------------------
def when(value: str | datetime | None) -> datetime | None:
    """An API time (ISO-8601, `Z` for UTC) as an aware datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


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


def binary_size(n: float | None) -> str:
    """Bytes in binary units, as `status` shows memory (KiB to TiB)."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" or n >= 100 else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"


def headline(reason: str | None) -> str:
    """A reason's first line, for tables: a pipeline's error carries a whole traceback, which
    belongs in `status`, not in every row of a listing."""
    return (reason or "").split("\n", 1)[0]


def stamp(ts: datetime | None) -> str:
    """A moment in local time, to the second."""
    return "-" if ts is None else ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def span(started: str | datetime | None, ended: str | datetime | None) -> float | None:
    """Seconds from start to end (or to now while it runs)."""
    start = when(started)
    if start is None:
        return None
    return ((when(ended) or datetime.now(timezone.utc)) - start).total_seconds()


def dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


# -- layout ------------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Iterable[Sequence[str]], styles: Iterable[Sequence[str]] | None = None,
          stream: TextIO | None = None, shrink: Sequence[str] = ()) -> str:
    """Left-aligned columns two spaces apart, bold headers; `styles` colours cells (per row, per
    column); on a narrow terminal the `shrink` columns are cut with an ellipsis."""
    stream = stream or sys.stdout
    on = coloured(stream)
    rows = [list(r) for r in rows]
    looks = [list(s) for s in styles] if styles is not None else [[""] * len(headers) for _ in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    limit = width_of(stream)
    for name in shrink:
        over = sum(widths) + len(GAP) * (len(widths) - 1) - (limit or 10**9)
        if over <= 0:
            break
        i = headers.index(name)
        widths[i] = min(widths[i], max(len(name), 8, widths[i] - over))

    def line(cells: Sequence[str], looks: Sequence[str]) -> str:
        fitted = [c if len(c) <= w else c[:w - 1] + "…" for c, w in zip(cells, widths)]
        return GAP.join(paint(c, s, on) + " " * (w - len(c)) for c, w, s in zip(fitted, widths, looks)).rstrip()

    return "\n".join([line(headers, ["bold"] * len(headers)), *(line(r, s) for r, s in zip(rows, looks))])


def grid(pairs: Sequence[tuple[str, str]], styles: Sequence[str] | None = None, stream: TextIO | None = None) -> str:
    """`key  value` lines, keys bold and aligned (a job's record)."""
    on = coloured(stream or sys.stdout)
    w = max(len(k) for k, _ in pairs)
    looks = styles or [""] * len(pairs)
    return "\n".join(f"{paint(k, 'bold', on)}{' ' * (w - len(k))}{GAP}{paint(v, s, on)}".rstrip()
                     for (k, v), s in zip(pairs, looks))


# -- the common commands' output -----------------------------------------------------------------
JOB_COLUMNS = ["ID", "NAME", "STATUS", "PRI", "NODE", "CREATED", "RUNTIME", "EXIT", "REASON"]
WIDE_COLUMNS = ["ID", "NAME", "STATUS", "PRI", "TENANT", "RESOURCES", "ATTEMPTS", "NODE", "CREATED", "CREATED AT",
                "RUNTIME", "EXIT", "START", "REASON"]


def pending_text(p: Any, now: datetime | None = None) -> str:
    """Why a pending job waits, in one line: `Resources (needs CPU=4, largest free CPU=2);
    position 3 of 18; starts in ~12m00s` (the parts it has)."""
    parts = [f"{p['code']} ({p['text']})"]
    if p.get("position"):
        parts.append(f"position {p['position']} of {p['of']}")
    if p.get("estimated_start"):
        parts.append("starts " + starts_in(when(p["estimated_start"]), now))
    return "; ".join(parts)


def starts_in(at: datetime | None, now: datetime | None = None) -> str:
    """An estimated start, from now: `in ~12m00s`, or `now` once it is due."""
    if at is None:
        return "-"
    secs = (at - (now or datetime.now(timezone.utc))).total_seconds()
    return "now" if secs < 1 else f"in ~{duration(secs)}"


def reason_cell(j: Any) -> str:
    """A listing's reason: a pending job's live one (its code and words), an array's progress,
    else the stored one."""
    p = j.get("pending")
    if p:
        return f"{p['code']}: {p['text']}"
    if j.get("array") and not (j["status"] in ("CANCELLED", "REJECTED") and j.get("reason")):
        return array_counts(j["array"])
    return headline(j.get("reason"))


def array_counts(a: Any) -> str:
    """`412/1000 done, 20 running, 3 failed` (the parts there are)."""
    ended = a["completed"] + a["failed"] + a["cancelled"]
    parts = [f"{ended}/{a['size']} done"] + [f"{a[k]} {k}" for k in ("running", "failed", "cancelled") if a[k]]
    return ", ".join(parts)


def array_bar(a: Any, width: int = 20) -> str:
    """`[=========>          ]`: the share of an array's tasks that have ended."""
    ended = a["completed"] + a["failed"] + a["cancelled"]
    filled = width * ended // max(1, a["size"])
    return "[" + "=" * filled + (">" if filled < width else "") + " " * max(0, width - filled - 1) + "]"


def arrays_table(jobs: Sequence[dict[str, Any]], wide: bool = False) -> None:
    """`sage-ops jobs --arrays`: each array, its progress bar and counts."""
    cols = ["ID", "NAME", "STATUS", "TASKS", "PROGRESS"]
    rows = [[j["id"], j["name"], j["status"], f"{j['array']['size']}" + (f" %{j['array']['throttle']}"
             if j["array"].get("throttle") else ""), f"{array_bar(j['array'])} {array_counts(j['array'])}"]
            for j in jobs if j.get("array")]
    looks = [["", "", STATUS_STYLE.get(r[2], ""), "", ""] for r in rows]
    print(table(cols, rows, looks, shrink=("NAME",)))


def _resources(spec: dict[str, Any] | None) -> str:
    res = (spec or {}).get("resources")
    return "-" if not res else f"cpu={res['cpu']:g} gpu={res['gpu']:g}"


def job_row(j: dict[str, Any]) -> dict[str, str]:
    created = when(j["created_at"])
    return {"ID": j["id"], "NAME": j["name"], "STATUS": j["status"], "PRI": str(j["priority"]),
            "TENANT": dash(j.get("tenant")), "RESOURCES": _resources(j.get("spec")),
            "ATTEMPTS": str(j.get("attempts_made", 0)), "NODE": dash(j.get("node")), "CREATED": ago(created),
            "CREATED AT": stamp(created), "RUNTIME": duration(span(j.get("started_at"), j.get("ended_at"))),
            "EXIT": dash(j.get("exit_code")), "REASON": reason_cell(j),
            "START": starts_in(when((j.get("pending") or {}).get("estimated_start")))}


def jobs_table(jobs: Sequence[dict[str, Any]], wide: bool = False) -> None:
    """`sage-ops jobs` (-o wide adds tenant, resources, attempts and the creation time itself)."""
    cols = WIDE_COLUMNS if wide else JOB_COLUMNS
    rows = [job_row(j) for j in jobs]
    looks = [[STATUS_STYLE.get(r["STATUS"], "") if c == "STATUS" else "" for c in cols] for r in rows]
    print(table(cols, ([r[c] for c in cols] for r in rows), looks, shrink=("REASON", "NAME")))


def _command(spec: dict[str, Any]) -> str:
    if spec.get("pipeline"):
        p = spec["pipeline"]
        return f"pipeline: {len(p['plan']['operators'])} operators, {p.get('payload_bytes', 0)} bytes of code"
    if spec.get("script"):
        return f"{spec['script']['filename']} {' '.join(spec.get('args') or [])}".strip()
    return " ".join(spec.get("command") or [])


def after_text(ok: Sequence[str], notok: Sequence[str] = (), any_: Sequence[str] = ()) -> str:
    """What a job waits for, by condition: `A, B · not ok: C · any: D` (`-`: nothing)."""
    parts = [", ".join(ok)] if ok else []
    parts += [f"{label}: {', '.join(ids)}" for label, ids in (("not ok", notok), ("any", any_)) if ids]
    return " · ".join(parts) or "-"


def _spec_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    res, rp = s["resources"], s["retry_policy"]
    mem = f", memory={binary_size(res['memory'])}" if res.get("memory") else ""
    custom = "".join(f", {k}={v:g}" for k, v in (res.get("custom_resources") or {}).items())
    retries = (f"{rp['max_retries']} (delay {rp['retry_delay']:g}s x {rp['retry_exponential_base']:g}^n, "
               f"cap {rp['max_delay']:g}s)" if rp["max_retries"] else "0")
    return [("command", _command(s)), ("resources", f"cpu={res['cpu']:g}, gpu={res['gpu']:g}{mem}{custom}"),
            ("working dir", s.get("working_dir") or "-"),
            ("after", after_text(s.get("dependencies") or [], s.get("after_notok") or [], s.get("after_any") or [])),
            ("retries", retries), ("timeout", f"{s['timeout']:g}s" if s.get("timeout") else "daemon default")] + (
            [("begin", stamp(datetime.fromtimestamp(s["begin_at"], timezone.utc)))] if s.get("begin_at") else [])


def job_detail(job: dict[str, Any]) -> None:
    """`sage-ops status ID`: the record, then its attempts."""
    why = pending_text(job["pending"]) if job.get("pending") else job.get("reason") or "-"
    rows = [("id", job["id"]), ("name", job["name"]), ("status", job["status"]), ("reason", why),
            ("kind", job["kind"]), ("priority", str(job["priority"])), ("node", dash(job.get("node"))),
            ("exit code", dash(job.get("exit_code"))), ("created", stamp(when(job["created_at"]))),
            ("started", stamp(when(job.get("started_at")))), ("ended", stamp(when(job.get("ended_at")))),
            ("runtime", duration(span(job.get("started_at"), job.get("ended_at"))))]
    if job.get("array"):
        a, spec = job["array"], job.get("spec") or {}
        indices = (spec.get("array") or {}).get("indices", "")
        throttle = f", at most {a['throttle']} at once" if a.get("throttle") else ""
        rows.append(("array", f"{indices} ({a['size']} tasks{throttle}): {array_counts(a)}, {a['waiting']} waiting "
                              f"(its tasks: sage-ops jobs --array {job['id']})"))
    if job.get("array_id"):
        rows.append(("task", f"index {job['array_index']} of array {job['array_id']}"))
    if job.get("spec"):
        rows += _spec_rows(job["spec"])
    looks = [STATUS_STYLE.get(v, "") if k == "status" else "" for k, v in rows]
    print(grid(rows, looks))
    if job.get("attempts"):
        print(attempts_table(job["attempts"]))


def attempts_table(attempts: Sequence[dict[str, Any]]) -> str:
    cols = ["#", "STATUS", "NODE", "PID", "STARTED", "RUNTIME", "CPU", "MAX RSS", "EXIT", "REASON"]
    rows = [[str(a["number"]), a["status"], dash(a.get("node")), dash(a.get("pid")), stamp(when(a.get("started_at"))),
             duration(span(a.get("started_at"), a.get("ended_at"))), duration(a.get("cpu_seconds")),
             binary_size(a.get("max_rss_bytes")), dash(a.get("exit_code")), headline(a.get("reason"))]
            for a in attempts]
    looks = [["", STATUS_STYLE.get(r[1], ""), *[""] * 8] for r in rows]
    return "attempts\n" + table(cols, rows, looks, shrink=("REASON",))


def log_line(entry: dict[str, Any], timestamps: bool = True) -> str:
    """One line of `sage-ops logs`: local time to the millisecond, the stream unless stdout, the text."""
    prefix = ""
    if timestamps:
        prefix = when(entry["timestamp"]).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " "  # type: ignore[union-attr]
    if entry.get("stream", "stdout") != "stdout":
        prefix += f"[{entry['stream']}] "
    return prefix + entry["message"]

"""Dynamic shell completion: job ids, node names and tenants, asked of the daemon.

A completion runs on every TAB, so it must be quick and invisible: the daemon is asked through
wire.py (plain JSON, nothing heavy imported), each request has a short timeout (TIMEOUT), and
any failure — no daemon, a refusal, a slow answer — gives no candidates rather than a message
(stdout is the shell's, and an error printed there would become a "candidate")."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any

import click
from click.shell_completion import CompletionItem

TIMEOUT = 0.2  # seconds per request to the daemon while completing
ACTIVE = ("SUBMITTED", "PENDING", "RUNNING")
RETRYABLE = ("FAILED", "CANCELLED")
WAITING = ("SUBMITTED", "PENDING")


def _wire(ctx: click.Context) -> Any:
    """The daemon the command line names (--address/--config/--token[-file]), with a short timeout;
    the root's params are parsed even while completing."""
    from . import Ctx, read_secret_file

    p = ctx.find_root().params
    token = p.get("token") or (read_secret_file(p["token_file"], "--token-file") if p.get("token_file") else None)
    return Ctx(p.get("address"), p.get("config_path"), token, p.get("ca"), bool(p.get("insecure"))).wire(
        timeout=TIMEOUT)


def _quietly(fetch: Callable[[], list[CompletionItem]]) -> list[CompletionItem]:
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return fetch()
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []


def job_ids(prefer: Sequence[str] = ()) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """Ids of jobs in the `prefer` statuses (with name and status as help); the newest jobs of any
    status when none of those match."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        def fetch() -> list[CompletionItem]:
            w = _wire(ctx)
            for statuses in ([list(prefer)] if prefer else []) + [[]]:
                jobs = w.call("GET", "/v1/jobs", {"status": statuses, "limit": 100})["jobs"]
                hits = [CompletionItem(j["id"], help=f"{j['name']} ({j['status']})") for j in jobs
                        if j["id"].startswith(incomplete)]
                if hits:
                    return hits
            return []

        return _quietly(fetch)

    return complete


def node_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    def fetch() -> list[CompletionItem]:
        return [CompletionItem(n["name"], help=f"{n['state']}" + (f" {n['host']}" if n.get("host") else ""))
                for n in _wire(ctx).call("GET", "/v1/nodes") if n["name"].startswith(incomplete)]

    return _quietly(fetch)


def tenant_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    def fetch() -> list[CompletionItem]:
        return [CompletionItem(t["name"]) for t in _wire(ctx).call("GET", "/v1/tenants")
                if t["name"].startswith(incomplete)]

    return _quietly(fetch)


def status_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Statuses as the API spells them (click's own completion of a case-insensitive choice
    offers them lower-cased)."""
    from ..lifecycle import JobStatus

    return [CompletionItem(s.value) for s in JobStatus if s.value.startswith(incomplete.upper())]



def file_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The shell's own file-name completion (a script to submit, or a file a command takes): the
    shell lists the directory, so nothing is asked of the daemon."""
    return [CompletionItem(incomplete, type="file")]

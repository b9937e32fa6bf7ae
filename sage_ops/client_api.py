"""The client's API methods, written once for both clients: each builds a `Call` (transport.py)
that the sync client runs at once and the async client returns as a coroutine. Apart from
client.py, so that a new endpoint is added here alone, and how calls travel stays there."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from . import paths
from .access import AuditList, Identity, TenantView, TokenCreated, TokenView
from .bodies import JobFilter, JobUpdate
from .cluster import NodeView, PoolEventView, PoolView
from .errors import SageOpsError
from .lifecycle import JobStatus
from .retention import GcReport
from .schemas import JobSpec, Resources, RetryPolicy, ScriptFile
from .telemetry import Health as HealthView
from .telemetry import MetricsSeries, Stats
from .transport import Call
from .views import BulkResult, GraphView, JobEventView, JobList, JobRef, JobResult, JobView, LogEntry
from .workdir import Packed, ship

T = TypeVar("T")
GC_TIMEOUT = 3600.0  # seconds a `gc` may take: a backlog of millions drains in paced batches


def _submit(path: str, parse: Callable[[Any], T], body: Any, timeout: float | None = None) -> Call[T]:
    """A submit with a fresh Idempotency-Key: safe to send again after a timeout or a failover
    (the daemon answers a repeat with the jobs it already made)."""
    return Call("POST", path, parse, json=body, timeout=timeout, headers={"Idempotency-Key": uuid.uuid4().hex})


def script_spec(script_path: str | os.PathLike[str], args: Sequence[str] | None = None, **kw: Any) -> JobSpec:
    """A script job: the file's content travels with the job, so it runs on any node."""
    path = Path(script_path)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SageOpsError(f"no such script: {path}", "bad_request") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SageOpsError(f"cannot read script {path}: {exc}", "bad_request") from None
    return JobSpec(kind="script", script=ScriptFile(filename=path.name, content=content), args=list(args or []),
                   **{k: v for k, v in kw.items() if v is not None})


def _job_kwargs(resources: Resources | dict[str, Any] | None, retry_policy: RetryPolicy | dict[str, Any] | None,
                **kw: Any) -> dict[str, Any]:
    out = dict(kw)
    if resources is not None:
        out["resources"] = Resources.model_validate(resources)
    if retry_policy is not None:
        out["retry_policy"] = RetryPolicy.model_validate(retry_policy)
    return out


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _bulk(ids: Sequence[str] | JobFilter | dict[str, Any] | None, filter: dict[str, Any]) -> dict[str, Any]:
    """The body of a bulk cancel/retry: ids, or a filter given as a JobFilter, a dict or keywords."""
    if isinstance(ids, (JobFilter, dict)):
        filter = {**(ids.model_dump(exclude_defaults=True) if isinstance(ids, JobFilter) else ids), **filter}
        ids = None
    if ids:
        return {"ids": list(ids)}
    flt = JobFilter.model_validate(filter)
    return {"filter": flt.model_dump(mode="json", exclude_defaults=True)}


def _bulk_call(action: str, ids: Sequence[str] | JobFilter | dict[str, Any] | None, filter: dict[str, Any],
               dry_run: bool, idempotent: bool = True, **options: Any) -> Call[Any]:
    """A bulk action (cancel, retry, hold, release) on ids or a filter: a BulkResult."""
    return Call("POST", f"/v1/jobs/{action}", BulkResult.model_validate,
                json={**_bulk(ids, filter), "dry_run": dry_run, **options}, idempotent=idempotent, timeout=300)


def _refs(body: dict[str, Any]) -> list[JobRef]:
    """The daemon's own answer, built without re-validation (100,000 refs in a few ms)."""
    return [JobRef.model_construct(id=j["id"], name=j["name"], status=JobStatus(j["status"]), reason=j["reason"])
            for j in body["jobs"]]


def _dump(spec: JobSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_defaults=True)


def _in_workdir(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs that name no working_dir run where the caller is, as `sage-ops submit` does (one
    rule: paths.working_dir); a relative one is made absolute here, where it was meant."""
    here = paths.working_dir()
    out = []
    for body in bodies:
        given = body.get("working_dir")
        wd = here if given is None else paths.working_dir(given) if isinstance(given, str) else given
        out.append({**body, "working_dir": wd} if wd != given else body)
    return out


def _with_workdir(body: dict[str, Any], workdir: str | os.PathLike[str] | None) -> dict[str, Any]:
    return {**body, "workdir": os.fspath(workdir)} if workdir is not None else body


class _Api:
    """The API methods, transport-agnostic."""

    def _run(self, call: Call[Any]) -> Any:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def _upload_then(self, packs: list[Packed], call: Call[T]) -> Any:  # pragma: no cover - by subclasses
        """Upload the packages the daemon does not have yet, then run `call`."""
        raise NotImplementedError

    def _shipped(self, bodies: list[dict[str, Any]], make: Callable[[list[dict[str, Any]]], Call[T]]) -> Any:
        """Run the submit `make(bodies)` after packing each body's `workdir` (a local directory:
        sage_ops/workdir.py) and uploading the packages the daemon does not have yet."""
        bodies, packs = ship(_in_workdir(bodies))
        call = make(bodies)
        if not packs:
            return self._run(call)
        return self._upload_then(packs, call)

    # submission
    def submit_job(self, spec: JobSpec | dict[str, Any]) -> Any:
        """A dict may name `workdir`: a local directory shipped with the job (its working
        directory on the node, wherever it runs)."""
        workdir = spec.get("workdir") if isinstance(spec, dict) else None
        if isinstance(spec, dict):
            spec = {k: v for k, v in spec.items() if k != "workdir"}
        body = _with_workdir(_dump(JobSpec.model_validate(spec)), workdir)
        return self._shipped([body], lambda b: _submit("/v1/jobs", JobView.model_validate, b[0]))

    def submit_script(self, script_path: str | os.PathLike[str], args: Sequence[str] | None = None,
                      resources: Resources | dict[str, Any] | None = None, dependencies: Sequence[str] | None = None,
                      retry_policy: RetryPolicy | dict[str, Any] | None = None, priority: int = 0,
                      name: str | None = None, env: dict[str, str] | None = None, working_dir: str | None = None,
                      timeout: float | None = None, workdir: str | os.PathLike[str] | None = None,
                      pip: Sequence[str] | None = None, venv: str | None = None, image: str | None = None) -> Any:
        """Submit a script file (its content travels with the job); returns the new job's id. It
        runs in `working_dir` (a directory of the node), by default the caller's current directory,
        like `sage-ops submit`; or in `workdir`, a local directory shipped with it. `pip`: the
        requirements it runs with (Ray's runtime_env), `venv`: a virtualenv of the node, `image`:
        a container image (podman on the node)."""
        spec = script_spec(script_path, args, **_job_kwargs(resources, retry_policy, priority=priority, name=name,
                                                             env=env, working_dir=working_dir, timeout=timeout,
                                                             dependencies=list(dependencies or []),
                                                             pip=list(pip or []), venv=venv, image=image))
        return self._shipped([_with_workdir(_dump(spec), workdir)], lambda b: _submit("/v1/jobs", lambda d: d["id"],
                                                                                      b[0]))

    def submit_command(self, command: Sequence[str], **kw: Any) -> Any:
        """Submit an argv; returns the new job's id. Takes `submit_script`'s keywords."""
        workdir = kw.pop("workdir", None)
        spec = JobSpec(kind="command", command=list(command), **_job_kwargs(kw.pop("resources", None),
                                                                            kw.pop("retry_policy", None), **kw))
        return self._shipped([_with_workdir(_dump(spec), workdir)], lambda b: _submit("/v1/jobs", lambda d: d["id"],
                                                                                      b[0]))

    def submit_batch(self, specs: Sequence[JobSpec | dict[str, Any]]) -> Any:
        """Many jobs in one durable commit; returns (id, name, status, reason) per job, in order."""
        # Plain dicts travel as they are: the daemon validates every job anyway (and answers the
        # first error with its index), so validating 100,000 specs twice only costs time.
        bodies = [s if isinstance(s, dict) else _dump(s) for s in specs]
        return self._shipped(bodies, lambda b: _submit("/v1/jobs/batch", _refs, {"jobs": b}, timeout=300))

    # queries
    def get_job(self, job_id: str) -> Any:
        """The job's whole record (JobView): spec, status, reason, attempts, result, pipeline."""
        return self._run(Call("GET", f"/v1/jobs/{job_id}", JobView.model_validate))

    def get_job_status(self, job_id: str) -> Any:
        """Just the status, a str enum (as Ray's client answers): `== "COMPLETED"` holds and
        f-strings print `COMPLETED`. The whole record is `get_job`."""
        return self._run(Call("GET", f"/v1/jobs/{job_id}", lambda d: JobStatus(d["status"])))

    def get_job_result(self, job_id: str) -> Any:
        return self._run(Call("GET", f"/v1/jobs/{job_id}/result", lambda d: JobResult.model_validate(d).result))

    def get_job_events(self, job_id: str) -> Any:
        return self._run(Call("GET", f"/v1/jobs/{job_id}/events",
                               lambda d: [JobEventView.model_validate(e) for e in d]))

    def get_job_logs(self, job_id: str, tail: int | None = None, attempt: int | None = None) -> Any:
        """The log so far (LogEntry: .timestamp, .message, .attempt); of one attempt if given."""
        params = {k: v for k, v in (("tail", tail), ("attempt", attempt)) if v is not None}
        return self._run(Call("GET", f"/v1/jobs/{job_id}/logs", _parse_ndjson, params=params or None))

    def list_jobs(self, status: str | Sequence[str] | None = None, name: str | None = None, limit: int = 100,
                  tenant: str | None = None, since: datetime | str | None = None, until: datetime | str | None = None,
                  cursor: str | None = None, page: bool = False, sort: str | None = None, desc: bool = False,
                  array: str | None = None, arrays: bool = False) -> Any:
        """Newest first, or by `sort` (a column: id, name, status, priority, tenant, node, attempts,
        exit_code, reason, created, started, ended; `desc` reverses it) over every matching job.
        An array is one job; `array=ID` lists its tasks, `arrays=True` only arrays. With
        `page=True` returns the JobList (jobs + next_cursor) to page on."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        params = {"status": [s.upper() for s in statuses], "name": name, "limit": limit, "tenant": tenant,
                  "since": _iso(since), "until": _iso(until), "cursor": cursor, "sort": sort, "desc": desc,
                  "array": array, "arrays": arrays}
        return self._run(Call("GET", "/v1/jobs", lambda d: JobList.model_validate(d) if page
                               else JobList.model_validate(d).jobs, params={k: v for k, v in params.items() if v}))

    def get_job_graph(self, job_id: str) -> Any:
        """The job's DAG: nodes in topological order, critical path, progress counts."""
        return self._run(Call("GET", f"/v1/jobs/{job_id}/graph", GraphView.model_validate))

    def wait_once(self, job_id: str, timeout: float = 30) -> Any:
        return self._run(Call("GET", f"/v1/jobs/{job_id}/wait", JobView.model_validate,
                               params={"timeout": timeout}, timeout=timeout + self._timeout()))

    # control
    def cancel_job(self, job_id: str) -> Any:
        return self._run(Call("POST", f"/v1/jobs/{job_id}/cancel", JobView.model_validate, timeout=120))

    def cancel_jobs(self, job_ids: Sequence[str] | JobFilter | dict[str, Any] | None = None, *,
                    dry_run: bool = False, **filter: Any) -> Any:
        """Cancel by ids, or by filter (`status`, `name` glob, `tenant`, `since`, `until`): a
        BulkResult with the jobs affected, the dependents cancelled with them, the jobs that had
        already ended (`unchanged`: not an error) and errors. `dry_run`: only say what it would touch."""
        return self._run(_bulk_call("cancel", job_ids, filter, dry_run))

    def retry_job(self, job_id: str) -> Any:
        """A finished job again, as a new attempt."""
        return self._run(Call("POST", f"/v1/jobs/{job_id}/retry", JobView.model_validate, idempotent=False))

    def retry_jobs(self, job_ids: Sequence[str] | JobFilter | dict[str, Any] | None = None, *,
                   dry_run: bool = False, with_dependents: bool = False, failed: bool = False, **filter: Any) -> Any:
        """Finished jobs again (by ids or filter); `with_dependents`: also what their failure cancelled;
        `failed`: an array's tasks that did not complete, not all of them."""
        flags = {k: True for k, v in (("with_dependents", with_dependents), ("failed", failed)) if v}
        return self._run(_bulk_call("retry", job_ids, filter, dry_run, idempotent=dry_run, **flags))

    def hold_jobs(self, job_ids: Sequence[str] | JobFilter | dict[str, Any] | None = None, *,
                  dry_run: bool = False, **filter: Any) -> Any:
        """Keep waiting jobs (by ids or filter) from starting until released: a BulkResult."""
        return self._run(_bulk_call("hold", job_ids, filter, dry_run))

    def release_jobs(self, job_ids: Sequence[str] | JobFilter | dict[str, Any] | None = None, *,
                     dry_run: bool = False, **filter: Any) -> Any:
        """Let held jobs (by ids or filter) start again: a BulkResult."""
        return self._run(_bulk_call("release", job_ids, filter, dry_run))

    def update_job(self, job_id: str, **changes: Any) -> Any:
        """Change a waiting job: priority, timeout, begin_at, resources (merged), dependencies,
        after_notok, after_any; an array's throttle (also while it runs). The job's view afterwards."""
        body = JobUpdate.model_validate(changes).changes()
        return self._run(Call("PATCH", f"/v1/jobs/{job_id}", JobView.model_validate, json=body))

    def set_priority(self, job_id: str, priority: int) -> Any:
        return self._run(Call("POST", f"/v1/jobs/{job_id}/priority", JobView.model_validate,
                               json={"priority": priority}))

    # access control (tenants, tokens, audit)
    def whoami(self) -> Any:
        return self._run(Call("GET", "/v1/whoami", Identity.model_validate))

    def create_tenant(self, name: str, **quotas: Any) -> Any:
        """A tenant with quotas (max_running, max_cpu, max_gpu, max_queued, weight) and the Unix user its
        token callers' jobs run as on a multi-user daemon (run_as)."""
        return self._run(Call("POST", "/v1/tenants", TenantView.model_validate, json={"name": name, **quotas},
                               idempotent=False))

    def update_tenant(self, name: str, **quotas: Any) -> Any:
        """Change only the quotas (or run_as) given (None clears a limit)."""
        return self._run(Call("PATCH", f"/v1/tenants/{name}", TenantView.model_validate, json=quotas))

    def list_tenants(self) -> Any:
        return self._run(Call("GET", "/v1/tenants", lambda d: [TenantView.model_validate(t) for t in d]))

    def delete_tenant(self, name: str) -> Any:
        return self._run(Call("DELETE", f"/v1/tenants/{name}", lambda d: d))

    def map_user(self, tenant: str, uid: int, role: str = "member") -> Any:
        """Let local user `uid` in through the Unix socket, as a member (or viewer) of `tenant`."""
        return self._run(Call("POST", f"/v1/tenants/{tenant}/users", TenantView.model_validate,
                               json={"uid": uid, "role": role}))

    def unmap_user(self, tenant: str, uid: int) -> Any:
        return self._run(Call("DELETE", f"/v1/tenants/{tenant}/users/{uid}", TenantView.model_validate))

    def create_token(self, name: str, tenant: str | None = None, role: str = "member",
                     rate_limit: float | None = None, expires_in: float | None = None) -> Any:
        """A new token; its secret (`.token`) is in this answer only."""
        body = {"name": name, "tenant": tenant, "role": role, "rate_limit": rate_limit, "expires_in": expires_in}
        return self._run(Call("POST", "/v1/tokens", TokenCreated.model_validate,
                               json={k: v for k, v in body.items() if v is not None}, idempotent=False))

    def list_tokens(self, tenant: str | None = None, revoked: bool = False) -> Any:
        params = {"tenant": tenant, "revoked": str(revoked).lower()}
        return self._run(Call("GET", "/v1/tokens", lambda d: [TokenView.model_validate(t) for t in d],
                               params={k: v for k, v in params.items() if v is not None}))

    def revoke_token(self, token_id: int) -> Any:
        return self._run(Call("DELETE", f"/v1/tokens/{token_id}", TokenView.model_validate))

    def revoke_tokens(self, tenant: str) -> Any:
        """Revoke every token of `tenant`; returns how many."""
        return self._run(Call("POST", "/v1/tokens/revoke", lambda d: d["revoked"],
                               json={"tenant": tenant, "all": True}))

    def audit(self, since: datetime | str | None = None, tenant: str | None = None, actor: str | None = None,
              action: str | None = None, limit: int = 1000) -> Any:
        """Audit events, newest first: mutating calls and denied requests."""
        params = {"since": _iso(since), "tenant": tenant, "actor": actor, "action": action, "limit": limit}
        return self._run(Call("GET", "/v1/audit", lambda d: AuditList.model_validate(d).events,
                               params={k: v for k, v in params.items() if v is not None}))

    def gc(self, older_than: float | None = None, dry_run: bool = False) -> Any:
        """Delete the finished jobs that ended more than `older_than` seconds ago (default: the daemon's
        jobmanager.retention) with their logs and results, now; with `dry_run` only count them (admins)."""
        return self._run(Call("POST", "/v1/gc", GcReport.model_validate, json={"older_than": older_than,
                               "dry_run": dry_run}, timeout=GC_TIMEOUT))

    # the cluster: nodes and figures
    def list_nodes(self) -> Any:
        return self._run(Call("GET", "/v1/nodes", lambda d: [NodeView.model_validate(n) for n in d]))

    def get_node(self, name: str) -> Any:
        return self._run(Call("GET", f"/v1/nodes/{name}", NodeView.model_validate))

    def list_pools(self) -> Any:
        """The elastic pools (nodes.pools) as the leader's autoscaler last saw them."""
        return self._run(Call("GET", "/v1/pools", lambda d: [PoolView.model_validate(p) for p in d]))

    def pool_events(self, name: str, limit: int = 200) -> Any:
        """A pool's decisions with their reasons, newest first (admins)."""
        return self._run(Call("GET", f"/v1/pools/{name}/events",
                              lambda d: [PoolEventView.model_validate(e) for e in d], params={"limit": limit}))

    def add_node(self, host: str, **options: Any) -> Any:
        """Start adding a machine over SSH (NodeAdd's fields); follow it with node_progress()."""
        body = {"host": host, **{k: v for k, v in options.items() if v is not None}}  # the daemon validates
        return self._run(Call("POST", "/v1/nodes", NodeView.model_validate, json=body))

    def drain_node(self, name: str, force: bool = False) -> Any:
        return self._run(Call("POST", f"/v1/nodes/{name}/drain", NodeView.model_validate, json={"force": force}))

    def remove_node(self, name: str, force: bool = False) -> Any:
        return self._run(Call("DELETE", f"/v1/nodes/{name}", lambda d: d, params={"force": str(force).lower()}))

    def metrics_series(self, window: float = 3600) -> Any:
        return self._run(Call("GET", "/v1/metrics/series", MetricsSeries.model_validate, params={"window": window}))

    # daemon
    def health_check(self) -> Any:
        return self._run(Call("GET", "/v1/health", HealthView.model_validate))

    def get_statistics(self) -> Any:
        return self._run(Call("GET", "/v1/stats", Stats.model_validate))

    def _timeout(self) -> float:  # pragma: no cover
        raise NotImplementedError


def _event_params(after: int | None, follow: bool) -> dict[str, Any]:
    return {"follow": str(follow).lower(), **({"after": after} if after is not None else {})}

def _parse_ndjson(text: str) -> list[LogEntry]:
    return [LogEntry.model_validate_json(line) for line in text.splitlines() if line.strip()]


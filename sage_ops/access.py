"""API shapes of access control — tenants and their quotas, tokens, local users, who-am-I and
the audit trail — shared by the server, the client and the CLI's --json (schemas.py, views.py and
bodies.py hold the job shapes)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import Field

from .schemas import Strict
from .views import View

TENANT_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class Role(str, Enum):
    ADMIN = "admin"  # every tenant, and tenants/tokens themselves
    MEMBER = "member"  # its own tenant's jobs
    VIEWER = "viewer"  # its own tenant's jobs, read-only

    def __str__(self) -> str:
        return self.value


class Quotas(Strict):
    """Limits on a tenant's jobs. Unset means unlimited."""

    max_running: int | None = Field(None, ge=0, le=10_000_000, description="jobs running at once")
    max_cpu: float | None = Field(None, ge=0, le=10_000_000, description="CPUs of its running jobs")
    max_gpu: float | None = Field(None, ge=0, le=1_000_000, description="GPUs of its running jobs")
    max_queued: int | None = Field(None, ge=0, le=100_000_000, description="waiting jobs; more are REJECTED")
    weight: float = Field(1.0, gt=0, le=1_000_000, description="fair share when the cluster is contended")


UNIX_USER = r"^[a-z_][a-z0-9_.-]{0,31}$"
RUN_AS = Field(None, pattern=UNIX_USER, description="the Unix user its token callers' jobs run as on a multi-user "
               "daemon (not root, not the daemon's own user)")


class TenantCreate(Quotas):
    name: str = Field(pattern=TENANT_NAME, description="lower-case letters, digits and _.-")
    run_as: str | None = RUN_AS


class QuotaChange(Strict):
    """A partial update: only the fields given change (null clears a limit)."""

    max_running: int | None = Field(None, ge=0, le=10_000_000)
    max_cpu: float | None = Field(None, ge=0, le=10_000_000)
    max_gpu: float | None = Field(None, ge=0, le=1_000_000)
    max_queued: int | None = Field(None, ge=0, le=100_000_000)
    weight: float | None = Field(None, gt=0, le=1_000_000)
    run_as: str | None = RUN_AS


class TenantView(View):
    name: str
    quotas: Quotas
    run_as: str | None = None
    created_at: datetime
    running_jobs: int = 0
    queued_jobs: int = 0
    cpu_in_use: float = 0.0
    gpu_in_use: float = 0.0
    users: list[int] = Field(default_factory=list, description="local uids mapped to this tenant")


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$")
    tenant: str | None = Field(None, pattern=TENANT_NAME, description="required unless the role is admin")
    role: Role = Role.MEMBER
    rate_limit: float | None = Field(None, ge=0, le=1_000_000, description="requests/s; 0 unlimited")
    expires_in: float | None = Field(None, gt=0, le=10 * 365 * 86400, description="seconds")


class OwnToken(Strict):
    """A token of the caller's own for the dashboard's login link."""

    expires_in: float = Field(12 * 3600, gt=0, le=12 * 3600, description="seconds (at most 12 h)")


class TokenView(View):
    id: int
    name: str
    tenant: str | None = None
    role: Role
    rate_limit: float | None = None
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class TokenCreated(TokenView):
    token: str = Field(description="shown once; only its hash is kept")


class TokenRevoke(Strict):
    """Revoke every token of a tenant (`all` must be said out loud)."""

    tenant: str = Field(pattern=TENANT_NAME)
    all: bool

class UserMap(Strict):
    uid: int = Field(ge=0, le=2**32 - 1)
    role: Role = Role.MEMBER


class Identity(View):
    """Who the daemon thinks the caller is."""

    actor: str
    role: Role
    tenant: str | None = None
    via: str = Field(description="unix-socket peer uid, or bearer token")


class AuditEntry(View):
    id: int
    time: datetime
    actor: str
    tenant: str | None = None
    action: str
    target: str | None = None
    status: int
    detail: str | None = None


class AuditList(View):
    events: list[AuditEntry]

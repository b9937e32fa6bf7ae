"""Commands of access control: tenants (quotas, local users), tokens, the audit trail, whoami.
Thin like the rest: parse, call the client, render."""

from __future__ import annotations

import contextlib
import pwd
from typing import Any

import click

from .. import render
from ..errors import SageOpsError
from . import DURATION, WHEN, Ctx, cli, json_option, pass_ctx
from .completers import tenant_names
from .output import Output, list_command, output_option

ROLES = click.Choice(["admin", "member", "viewer"])


def quota_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--max-running", type=click.IntRange(0), help="Jobs running at once."),
        click.option("--max-cpu", type=click.FloatRange(0), help="CPUs its running jobs may hold."),
        click.option("--max-gpu", type=click.FloatRange(0), help="GPUs its running jobs may hold."),
        click.option("--max-queued", type=click.IntRange(0), help="Waiting jobs; more are REJECTED."),
        click.option("--weight", type=click.FloatRange(0, min_open=True), help="Fair share when contended."),
        click.option("--run-as", metavar="USER", help="Unix user its token callers' jobs run as (multi-user daemon)."),
    ]):
        f = opt(f)
    return f


def _uid(user: str) -> int:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise click.BadParameter(f"no local user {user!r}", param_hint="USER") from None


@cli.group()
def tenant() -> None:
    """Tenants: whose jobs are isolated from whose, and their quotas."""


@tenant.command("create")
@click.argument("name")
@quota_options
@json_option
@pass_ctx
def tenant_create(ctx: Ctx, name: str, as_json: bool, **quotas: Any) -> None:
    """Create a tenant, e.g. `tenant create analytics --max-running 20 --max-cpu 32 --run-as analytics`."""
    t = ctx.client().create_tenant(name, **{k: v for k, v in quotas.items() if v is not None})
    render.print_json(t) if as_json else render.tenants([t])
    _say_identity(ctx, t.run_as is None)


@tenant.command("update")
@click.argument("name", shell_complete=tenant_names)
@quota_options
@click.option("--clear", multiple=True,
              type=click.Choice(["max-running", "max-cpu", "max-gpu", "max-queued", "run-as"]),
              help="Remove this limit, or the run-as user (repeatable).")
@json_option
@pass_ctx
def tenant_update(ctx: Ctx, name: str, clear: tuple[str, ...], as_json: bool, **quotas: Any) -> None:
    """Change a tenant's quotas (only those given)."""
    change = {k: v for k, v in quotas.items() if v is not None}
    change.update({c.replace("-", "_"): None for c in clear})
    if not change:
        raise click.UsageError("give a quota to change, or --clear")
    t = ctx.client().update_tenant(name, **change)
    render.print_json(t) if as_json else render.tenants([t])


tenant_list = list_command(tenant, lambda ctx: ctx.client().list_tenants(), render.tenants,
                           "Tenants with their quotas and what they use now.")


@tenant.command("delete")
@click.argument("name", shell_complete=tenant_names)
@pass_ctx
def tenant_delete(ctx: Ctx, name: str) -> None:
    """Delete a tenant without active jobs (its tokens are revoked)."""
    out = ctx.client().delete_tenant(name)
    click.echo(f"deleted tenant {name}; {out['tokens_revoked']} tokens revoked")


@tenant.command("add-user")
@click.argument("name", shell_complete=tenant_names)
@click.argument("user")
@click.option("--role", type=ROLES, default="member", show_default=True)
@pass_ctx
def tenant_add_user(ctx: Ctx, name: str, user: str, role: str) -> None:
    """Let local USER (name or uid) in through the Unix socket as a member of tenant NAME.
    (The socket must be reachable: set security.socket_mode to 0660 and share its group.)"""
    uid = _uid(user)
    ctx.client().map_user(name, uid, role)
    click.echo(f"uid {uid} ({user}) is a {role} of tenant {name}")
    _say_identity(ctx, False)


def _say_identity(ctx: Ctx, no_run_as: bool) -> None:
    """Say which OS user the tenant's jobs will run as, where tenants are made: a single-user daemon
    runs every tenant's jobs as its own OS user; a multi-user one refuses token jobs of a tenant
    without run_as."""
    with contextlib.suppress(SageOpsError):
        identity = ctx.client().health_check().identity or ""
        if identity.startswith("single-user"):
            click.echo(f"note: {identity}", err=True)
        elif no_run_as:
            click.echo("note: this daemon is multi-user and the tenant has no run_as: jobs its tokens submit are "
                       "refused until it has one (tenant update NAME --run-as USER); its socket users' jobs run as "
                       "themselves", err=True)


@tenant.command("remove-user")
@click.argument("name", shell_complete=tenant_names)
@click.argument("user")
@pass_ctx
def tenant_remove_user(ctx: Ctx, name: str, user: str) -> None:
    uid = _uid(user)
    ctx.client().unmap_user(name, uid)
    click.echo(f"uid {uid} ({user}) is no longer a user of tenant {name}")


@cli.group()
def token() -> None:
    """API tokens for TCP clients (and for acting as a tenant on the socket)."""


@token.command("create")
@click.option("--tenant", shell_complete=tenant_names, help="The tenant it acts for (required unless --role admin).")
@click.option("--name", required=True, help="What it is for, e.g. ci-bot.")
@click.option("--role", type=ROLES, default="member", show_default=True)
@click.option("--rate-limit", type=click.FloatRange(0), help="Requests/s (0: unlimited) [default: the daemon's].")
@click.option("--expires-in", type=DURATION, help="Expire after this long: seconds, or 15m, 1h, 30d.")
@json_option
@pass_ctx
def token_create(ctx: Ctx, tenant: str | None, name: str, role: str, rate_limit: float | None,
                 expires_in: float | None, as_json: bool) -> None:
    """Create a token. It is printed once: only its hash is kept.

    \b
      sage-ops token create --tenant analytics --name ci-bot > ci-bot.token
      sage-ops token create --role admin --name ops > ops.token
    """
    if tenant is None and role != "admin":
        raise click.UsageError(f"a {role} token acts for one tenant: give --tenant TENANT "
                               "(sage-ops tenant list), or --role admin for a token of every tenant")
    t = ctx.client().create_token(name, tenant, role, rate_limit, expires_in)
    if as_json:
        render.print_json(t)
        return
    click.echo(t.token)
    click.echo(f"token {t.id} ({t.name}, {t.role} of {t.tenant or 'all tenants'}): shown once, store it now",
               err=True)


@token.command("list")
@click.option("--tenant", shell_complete=tenant_names, help="Only this tenant's tokens.")
@click.option("--revoked", is_flag=True, help="Include revoked tokens.")
@output_option(formats=("table", "json", "yaml", "name"))
@pass_ctx
def token_list(ctx: Ctx, tenant: str | None, revoked: bool, out: Output) -> None:
    """Tokens (never their secrets): id, name, tenant, role, expiry."""
    ts = ctx.client().list_tokens(tenant, revoked)
    out.emit(ts, lambda: render.tokens(ts))


@token.command("revoke")
@click.argument("token_id", required=False, type=int)
@click.option("--all", "all_", is_flag=True, help="Every token of --tenant.")
@click.option("--tenant", shell_complete=tenant_names)
@pass_ctx
def token_revoke(ctx: Ctx, token_id: int | None, all_: bool, tenant: str | None) -> None:
    """Revoke a token by id (it stops working at once), or --all --tenant NAME."""
    if all_ == (token_id is not None) or all_ != bool(tenant):
        raise click.UsageError("give a token id, or --all --tenant NAME")
    if all_:
        n = ctx.client().revoke_tokens(tenant)
        click.echo(f"revoked {n} tokens of tenant {tenant}")
    else:
        t = ctx.client().revoke_token(token_id)
        click.echo(f"revoked token {t.id} ({t.name})")


@cli.command()
@click.option("--since", type=WHEN, help="From this time or age (1h, 2d).")
@click.option("--tenant", shell_complete=tenant_names, help="Only this tenant's events (admins).")
@click.option("--actor", help="Only this actor, e.g. token:ci-bot#3 or uid:1001.")
@click.option("--action", help="Only this action, e.g. submit, cancel, denied.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def audit(ctx: Ctx, since: Any, tenant: str | None, actor: str | None, action: str | None, limit: int,
          out: Output) -> None:
    """Who did what: every mutating call and every denied request, newest first."""
    events = ctx.client().audit(since.astimezone() if since else None, tenant, actor, action, limit)
    out.emit(events, lambda: render.audit(events))


@cli.command()
@output_option(quiet=False, formats=("table", "json", "yaml"))
@pass_ctx
def whoami(ctx: Ctx, out: Output) -> None:
    """Who the daemon takes you for: actor, role, tenant."""
    me = ctx.client().whoami()
    out.emit(me, lambda: click.echo(f"{me.actor} ({me.role}{', tenant ' + me.tenant if me.tenant else ', all tenants'}"
                                    f"; via {me.via})"))

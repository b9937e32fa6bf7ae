"""`sage-ops nodes`: list the cluster's machines, add them over SSH (one or many at once), drain
and remove them. The daemon does the work; these commands ask for it and show its progress."""

from __future__ import annotations

import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from .. import render
from ..cluster import NodeView
from ..errors import SageOpsError
from ..nodes.base import STEPS
from . import EXIT_FAILED, Ctx, cli, json_option, pass_ctx
from .completers import node_names
from .output import Output, list_command, output_option
from .progress import Progress

_TARGET = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:]+\]|[^:\s]+)(?::(?P<port>\d+))?$")


def parse_target(text: str) -> dict[str, Any]:
    """`[user@]host[:port]` -> NodeAdd fields (the daemon validates them)."""
    m = _TARGET.match(text.strip())
    if not m:
        raise click.BadParameter(f"{text!r}: use [USER@]HOST[:PORT]")
    out: dict[str, Any] = {"host": m["host"].strip("[]")}
    if m["user"]:
        out["user"] = m["user"]
    if m["port"]:
        out["port"] = int(m["port"])
    return out


def read_hosts(path: str) -> list[dict[str, Any]]:
    """A hosts file: one `[USER@]HOST[:PORT] [NAME]` per line; `#` starts a comment."""
    targets = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].split()
        if not line:
            continue
        if len(line) > 2:
            raise click.BadParameter(f"{path}:{number}: expected [USER@]HOST[:PORT] [NAME]")
        target = parse_target(line[0])
        if len(line) == 2:
            target["name"] = line[1]
        targets.append(target)
    if not targets:
        raise click.BadParameter(f"{path}: no hosts in it")
    return targets


@cli.group(invoke_without_command=True)
@output_option(formats=("table", "json", "yaml", "name"))
@click.pass_context
def nodes(click_ctx: click.Context, out: Output) -> None:
    """The cluster's machines: CPUs, memory and GPUs in use, running jobs, heartbeat.

    Without a subcommand: the node list (as `nodes list`)."""
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(list_nodes, output=out.format)


list_nodes = list_command(nodes, lambda ctx: ctx.client().list_nodes(), render.nodes,
                          "Every Ray node, and the nodes sage-ops added (also those that are down).")


def _follow(ctx: Ctx, name: str, bar: Progress) -> NodeView:
    """Show a node operation's steps until it ends; returns the node as it is then."""
    client = ctx.client()
    steps_done = 0
    for p in client.node_progress(name):
        if p.step in STEPS and p.state in ("done", "skip"):
            steps_done = STEPS.index(p.step) + 1
        text = "done" if p.step == "end" and p.state == "done" else (
            f"failed: {p.detail}" if p.state == "fail" else f"{p.step}{': ' + p.detail if p.detail else ''}")
        bar.update(name, text[:70], steps_done if p.step != "end" or p.state == "fail" else bar.steps,
                   line=render.progress_line(p))
    return client.get_node(name)


@nodes.command("add")
@click.argument("targets", nargs=-1, metavar="[USER@]HOST[:PORT]...")
@click.option("--from", "hosts_file", metavar="FILE", help="Hosts, one `[USER@]HOST[:PORT] [NAME]` a line.")
@click.option("--parallel", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Bootstraps at once.")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port (default 22, or the one in the target).")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, resolve_path=True),
              help="Private key (default: the SSH agent, then ~/.ssh/id_*).")
@click.option("--name", help="Node name (one target only; default: the host).")
@click.option("--resources", metavar="JSON", help='Custom Ray resources of the node(s), e.g. \'{"TPU": 1}\'.')
@click.option("--num-cpus", type=click.IntRange(0), help="CPUs Ray offers there (default: all).")
@click.option("--num-gpus", type=click.IntRange(0), help="GPUs Ray offers there (default: detected).")
@click.option("--accept-new-host-key", is_flag=True, help="Record an unknown host key (a changed key is refused).")
@click.option("--wheel-dir", type=click.Path(exists=True, file_okay=False, resolve_path=True),
              help="Nodes without a package index: Ray and the rest from these wheels (`sage-ops nodes wheels "
                   "DIR` makes them), copied over SFTP.")
@click.option("--python", "python_bin", default="python3", show_default=True, help="The node's Python.")
@click.option("--venv", help="Where to install on the node (default: the config's nodes.venv).")
@click.option("--node-ip", help="The node's address for Ray (default: Ray picks).")
@json_option
@pass_ctx
def add_nodes(ctx: Ctx, targets: tuple[str, ...], hosts_file: str | None, parallel: int, port: int | None,
              key_file: str | None, name: str | None, resources: str | None, num_cpus: int | None,
              num_gpus: int | None, accept_new_host_key: bool, wheel_dir: str | None, python_bin: str,
              venv: str | None, node_ip: str | None, as_json: bool) -> None:
    """Make machines Ray nodes over SSH: connect -> check python -> install -> join ray -> verify.

    The daemon ships its own sage-ops to the node (a wheel it builds once per version and source)
    and pip on the node takes this Ray and the other dependencies from the node's package index,
    or from --wheel-dir when the node has none. Adding a node that is already up checks it and
    leaves it running."""
    wanted = [parse_target(t) for t in targets] + (read_hosts(hosts_file) if hosts_file else [])
    if not wanted:
        raise click.UsageError("give [USER@]HOST[:PORT] or --from FILE")
    if name and len(wanted) > 1:
        raise click.UsageError("--name is for one target; name many in the --from file")
    try:
        custom = json.loads(resources) if resources else {}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg}", param_hint="--resources") from None
    common = {"key_file": key_file, "resources": custom, "num_cpus": num_cpus, "num_gpus": num_gpus,
              "accept_new_host_key": accept_new_host_key, "wheel_dir": wheel_dir, "python": python_bin,
              "venv": venv, "node_ip": node_ip}
    common = {k: v for k, v in common.items() if v not in (None, {})}
    for target in wanted:
        if port and "port" not in target:
            target["port"] = port
        if name:
            target["name"] = name

    def one(target: dict[str, Any], bar: Progress) -> NodeView | str:
        label = target.get("name") or target["host"]
        try:
            started = ctx.client().add_node(**target, **common)
            return _follow(ctx, started.name, bar)
        except SageOpsError as exc:
            if len(wanted) == 1:
                raise  # refused outright: the one-line error of any command
            bar.update(label, f"failed: {exc.message}"[:70], line=f"{label}: failed - {exc.message}")
            return f"{label}: {exc.message}"

    with Progress(len(STEPS)) as bar, ThreadPoolExecutor(max_workers=parallel) as pool:
        for target in wanted:
            bar.add(target.get("name") or target["host"])
        results = list(pool.map(lambda t: one(t, bar), wanted))
    views = [r for r in results if isinstance(r, NodeView)]
    errors = [r for r in results if isinstance(r, str)]
    if as_json:
        render.print_json(views)
    else:
        render.nodes(views) if views else None
    failed = errors + [f"{v.name}: {v.detail}" for v in views if v.state != "UP"]
    ok = len(wanted) - len(failed)
    click.echo(f"{ok} of {len(wanted)} node(s) up" + ("" if not failed else "; failed:"), err=True)
    for line in failed:
        click.echo(f"  {line}", err=True)
    if failed:
        sys.exit(EXIT_FAILED)


@nodes.command("drain")
@click.argument("name", shell_complete=node_names)
@click.option("--force", is_flag=True, help="Do not wait for its running jobs (they fail and retry elsewhere).")
@click.option("--no-wait", is_flag=True, help="Return once draining has begun.")
@json_option
@pass_ctx
def drain_node(ctx: Ctx, name: str, force: bool, no_wait: bool, as_json: bool) -> None:
    """No new jobs on NAME; wait for its running jobs; then stop its Ray (over SSH)."""
    view = ctx.client().drain_node(name, force)
    if not no_wait:
        with Progress(3) as bar:
            bar.add(name)
            view = _follow(ctx, name, bar)
    render.print_json(view) if as_json else click.echo(f"{view.name} {view.state}" +
                                                       (f" ({view.detail})" if view.detail else ""))
    if not no_wait and view.state != "DRAINED":
        sys.exit(EXIT_FAILED)


@nodes.command("remove")
@click.argument("name", shell_complete=node_names)
@click.option("--force", is_flag=True, help="Also a node that is not drained: stop its Ray now.")
@pass_ctx
def remove_node(ctx: Ctx, name: str, force: bool) -> None:
    """Forget a drained node (with --force: any node, stopping its Ray first)."""
    out = ctx.client().remove_node(name, force)
    click.echo(f"removed {out['removed']} (was {out['was']})")


@nodes.command("wheels")
@click.argument("directory", type=click.Path(file_okay=False, resolve_path=True))
def wheels(directory: str) -> None:
    """Gather wheels of this Ray and sage-ops and everything they need into DIRECTORY, for
    `nodes add --wheel-dir` on machines without a package index (uses pip and its index here)."""
    from ..nodes.wheels import build_wheelhouse

    made = build_wheelhouse(Path(directory))
    click.echo(f"{len(made)} wheels in {directory}", err=True)

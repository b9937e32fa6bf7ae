"""`sage-ops config show|init|path`: the effective configuration, where each value came from, and a
commented starting file. The rules (precedence, validation) live in sage_ops/config.py."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import BaseModel

from .. import config as cfgmod
from .. import paths
from . import Ctx, cli, pass_ctx
from .output import Output, output_option


class Setting(BaseModel):
    """One effective value and its origin: flag, env NAME, file PATH or default."""

    key: str
    value: object
    source: str


@cli.group("config")
def config_group() -> None:
    """The configuration: flags > SAGE_OPS_SECTION__KEY env > file > defaults."""


@config_group.command("show")
@click.option("--sources", "with_sources", is_flag=True, help="Show where each value comes from.")
@output_option(quiet=False, formats=("yaml", "json", "table"))
@pass_ctx
def config_show(ctx: Ctx, with_sources: bool, out: Output) -> None:
    """The effective configuration (YAML by default; the database password shown as ***).

    \b
      sage-ops config show
      sage-ops config show --sources
      SAGE_OPS_JOBMANAGER__MAX_JOBS=5000 sage-ops config show --sources | grep max_jobs
    """
    cfg = ctx.config()
    values = cfg.model_dump(mode="json")
    values["database"]["url"] = cfgmod.redact_url(cfg.database.url)  # its password: never on a terminal
    if not with_sources:
        Output("json" if out.format == "json" else "yaml").emit(values)
        return
    origin = cfgmod.sources(ctx.config_path)
    rows = [Setting(key=key, value=values[key.split(".")[0]][key.split(".", 1)[1]], source=src)
            for key, src in origin.items()]
    if out.format in ("json", "yaml"):
        out.emit(rows)
        return
    width = max(len(r.key) for r in rows)
    for r in rows:
        click.echo(f"{r.key:<{width}}  {r.value!s:<40}  {r.source}")


@config_group.command("init")
@click.option("--path", "target", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it [default: --config, $SAGE_OPS_CONFIG, else the XDG config file].")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_ctx
def config_init(ctx: Ctx, target: Path | None, force: bool) -> None:
    """Write a commented config.yaml with every key and its default (all commented out)."""
    file = target or cfgmod.config_path(ctx.config_path)[0]
    if file.exists() and not force:
        raise click.ClickException(f"{file} exists; use --force to overwrite it")
    paths.ensure_dir(file.parent)
    file.write_text(cfgmod.template() + "\n")
    file.chmod(0o600)
    click.echo(f"wrote {file}", err=True)
    click.echo(str(file))


@config_group.command("path")
@pass_ctx
def config_path(ctx: Ctx) -> None:
    """The config file this command reads (it may not exist yet)."""
    click.echo(str(cfgmod.config_path(ctx.config_path)[0]))

"""`submit`'s options for what a job brings along: a working directory shipped with it (--workdir),
a directory of the node to run in (--chdir), Python packages (--pip, --requirements: Ray's
runtime_env pip), a virtualenv of the node (--venv), a container image (--image, podman)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import Invalid
from ..plaintext import binary_size
from ..workdir import ship, upload

F = TypeVar("F", bound=Callable[..., Any])

OPTIONS = (
    click.option("--workdir", metavar="DIR", help="Ship DIR with the job (.gitignore and .sage-ops-ignore "
                 "respected, at most 100 MiB packed) and run it in DIR's copy, on whichever node runs it."),
    click.option("--chdir", metavar="DIR", help="Run in DIR of the node, not shipped [default: the current "
                 "directory, if the node has it]; on the daemon's own socket it must exist here."),
    click.option("--pip", multiple=True, metavar="REQ", help="A pip requirement it runs with (repeatable): Ray "
                 "builds a virtualenv on each node and caches it."),
    click.option("--requirements", metavar="FILE", type=click.Path(dir_okay=False),
                 help="pip requirements from FILE (a requirements.txt), as --pip."),
    click.option("--venv", metavar="PATH", help="Run in the virtualenv at PATH on the node (PATH and VIRTUAL_ENV "
                 "set; a .py script runs with its python)."),
    click.option("--image", metavar="IMAGE", help="Run the command in a container of IMAGE with podman on the node "
                 "(its working directory mounted)."),
)
NAMES = {"--workdir", "--chdir", "--pip", "--requirements", "--venv", "--image"}


def environment_options(f: F) -> F:
    for option in reversed(OPTIONS):
        f = option(f)
    return f


def read_requirements(path: str | Path) -> list[str]:
    """A requirements file's requirements: its lines, without blanks and comments (OSError if unreadable)."""
    text = Path(path).read_text(encoding="utf-8")
    return [line.split(" #", 1)[0].strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def requirements(path: str) -> list[str]:
    """--requirements FILE's lines, or a usage error naming the option."""
    try:
        return read_requirements(path)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--requirements") from None


def batch_keys(item: dict[str, Any], base: Path) -> dict[str, Any]:
    """A batch file's job with its shipping keys as the client takes them: `workdir: DIR` ships DIR
    (relative to the file); so does `working_dir: DIR` when DIR is a directory here (as Ray's
    runtime_env working_dir), else it is the node's; `chdir: DIR` is always the node's;
    `requirements: FILE` adds FILE's lines to `pip`."""
    item = dict(item)
    given = item.get("working_dir")
    if isinstance(given, str) and (base / given).expanduser().is_dir():
        item["workdir"] = item.pop("working_dir")
    if "chdir" in item:
        item["working_dir"] = item.pop("chdir")
    if isinstance(item.get("workdir"), str):
        item["workdir"] = str(base / Path(item["workdir"]).expanduser())
    if isinstance(item.get("requirements"), str):
        extra = read_requirements(base / item.pop("requirements"))
        item["pip"] = [*(item.get("pip") or []), *extra]
    return item


def fields(workdir: str | None, pip: Sequence[str], requirements_file: str | None, venv: str | None,
           image: str | None) -> dict[str, Any]:
    """The spec keys these options give (`workdir`: a local directory, packed before sending)."""
    wanted = [*pip, *(requirements(requirements_file) if requirements_file else [])]
    out = {"workdir": workdir, "pip": wanted or None, "venv": venv, "image": image}
    return {k: v for k, v in out.items() if v}


def send_packages(call: Callable[..., Any], specs: list[dict[str, Any]], quiet: bool = False) -> list[dict[str, Any]]:
    """The specs with their working directories packed and uploaded (only what the daemon lacks,
    said on stderr); a directory that cannot be shipped is a usage error, one line."""
    try:
        shipped, packs = ship(specs)
    except Invalid as exc:
        raise click.UsageError(exc.message) from None
    sent = {p.sha256 for p in upload(call, packs)}
    for p in packs if not quiet else ():
        how = "uploaded" if p.sha256 in sent else "already on the daemon"
        click.echo(f"workdir {p.root}: {p.files} files, {binary_size(p.size)} packed, {how}", err=True)
    return shipped

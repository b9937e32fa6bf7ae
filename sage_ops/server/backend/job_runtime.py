"""What a job runs with on its node, beyond its command: a virtualenv of the node (`venv`), the one
Ray built for its `pip` list (Ray's runtime_env: the runner already runs in it), or a container
image run with podman (`image`). Each missing piece is a LookupError that says what is missing on
which node: the attempt fails with it as its reason, and is retried by the job's policy.

A container gets the job's own variables by name only (`--env NAME`: podman takes each value from
its own environment, which is the job's), so no value, a secret's least of all, is ever on a
command line. It sees the job's working and scratch directories, nothing else of the node.

Imported on Ray workers: standard library only.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Mapping

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def python(spec: Mapping[str, object], node: str) -> str:
    """The interpreter a .py script runs with: the venv's, the image's own `python3`, else the
    worker's (in a pip job, the virtualenv Ray made for it)."""
    venv = spec.get("venv")
    if isinstance(venv, str):
        return os.path.join(venv_root(venv, node), "bin", "python")
    return "python3" if spec.get("image") else sys.executable


def venv_root(path: str, node: str) -> str:
    """The virtualenv at `path` on this node, or LookupError saying it is not there."""
    if not os.path.isfile(os.path.join(path, "bin", "python")):
        raise LookupError(f"venv {path} does not exist on {node} (no bin/python there)")
    return path


def environment(spec: Mapping[str, object], base: Mapping[str, str], node: str) -> dict[str, str]:
    """PATH and VIRTUAL_ENV of the job's virtualenv: its --venv, or the one Ray made for its pip
    list (the worker runs activated in it); nothing for any other job."""
    venv = spec.get("venv")
    if isinstance(venv, str):
        root = venv_root(venv, node)
        return {"VIRTUAL_ENV": root, "PATH": f"{root}/bin:{base.get('PATH') or SYSTEM_PATH}"}
    if spec.get("pip") and base.get("VIRTUAL_ENV"):
        return {"VIRTUAL_ENV": base["VIRTUAL_ENV"]}
    return {}


def podman(argv: list[str], image: str, workdir: str, mounts: Iterable[str], names: Iterable[str],
           node: str) -> list[str]:
    """`argv` run in `image` by podman, in `workdir` (mounted with `mounts`), with the variables
    `names` passed by name; LookupError when podman is not installed here."""
    tool = shutil.which("podman", path=SYSTEM_PATH)
    if tool is None:
        raise LookupError(f"podman is not installed on {node}: --image needs it (apt install podman)")
    out = [tool, "run", "--rm", "--network=host", "--workdir", workdir]
    for path in dict.fromkeys([workdir, *mounts]):
        out += ["--volume", f"{path}:{path}"]
    for name in sorted(set(names)):
        out += ["--env", name]
    return [*out, "--", image, *argv]

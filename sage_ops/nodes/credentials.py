"""What a node's Ray gets from the daemon while it joins, and loses when it is stopped: the Ray
token and the cluster's transit key (0600 files written over SFTP, their paths in the environment
of `ray start`) and, on a `ray.tls` cluster, a certificate of the cluster CA for a key made on the
node itself (nodes.tls). No value ever appears on a command line or in what a step reports."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from ..server.backend.transit import TRANSIT_ENV
from . import tls
from .base import JoinPlan, StepFailed

if TYPE_CHECKING:
    from .ssh import _Remote


RAY_TEMP_RECORD = "ray-temp-"  # + the node's name: where its Ray temp dir is (removed with it, if safe)


def node_files(remote: _Remote, workdir: str, name: str) -> dict[str, str]:
    """Where node `name` keeps its credentials (absolute paths on the node)."""
    base = remote.path(workdir)
    return {"token": f"{base}/ray-token-{name}", "transit": f"{base}/transit-{name}.key", "tls": f"{base}/tls-{name}",
            "ray_temp": f"{base}/{RAY_TEMP_RECORD}{name}"}


def put_secret(remote: _Remote, path: str, value: str) -> None:
    """`value` into `path` on the node, owner-only before a byte of it is written."""
    remote.run(f"umask 077 && mkdir -p {shlex.quote(str(Path(path).parent))}", 20)
    with remote.sftp().open(path, "w") as f:
        f.chmod(0o600)
        f.write(value.encode())


def provision(remote: _Remote, plan: JoinPlan, workdir: str, made: dict[str, str], limit: float) -> dict[str, str]:
    """Put the node's credentials in place; the environment `ray start` needs for them. What is
    made is named in `made` (undone if the join fails)."""
    files = node_files(remote, workdir, plan.name)
    env: dict[str, str] = {}
    if plan.ray_token:
        made["token"] = files["token"]
        put_secret(remote, files["token"], plan.ray_token)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=files["token"])
    if plan.transit_key:
        made["transit"] = files["transit"]
        put_secret(remote, files["transit"], plan.transit_key)
        env[TRANSIT_ENV] = files["transit"]
    if plan.tls_dir is not None:
        made["tls"] = files["tls"]
        env.update(_certificate(remote, plan, files["tls"], limit))
    return env


def _certificate(remote: _Remote, plan: JoinPlan, directory: str, limit: float) -> dict[str, str]:
    """The node makes its key and a CSR (its sage-ops, just installed); the daemon signs it for
    the addresses the node is known by; the certificate and the CA go back over SFTP."""
    assert plan.tls_dir is not None
    python = shlex.quote(f"{remote.path(plan.venv)}/bin/python")
    rc, out, err = remote.run(f"{python} -I -m sage_ops.nodes.tls keygen {shlex.quote(directory)}", limit)
    try:
        made = json.loads(out)
        csr, reported = made["csr"].encode(), [str(n) for n in made["names"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StepFailed("join ray", f"could not make the node's TLS key: {(err or out).strip()[-300:]}") from None
    peer = remote.client.get_transport().getpeername()[0]  # type: ignore[union-attr]
    names = [plan.node_ip or peer, peer, *reported, "localhost", "127.0.0.1"]
    try:
        cert = tls.sign_csr(plan.tls_dir, csr, names)
        ca = tls.ca_pem(plan.tls_dir)
    except (tls.TlsError, OSError) as exc:
        raise StepFailed("join ray", f"cannot sign the node's certificate: {exc}") from None
    sftp = remote.sftp()
    for name, data in ((tls.CERT, cert), (tls.CA_CERT, ca)):
        with sftp.open(f"{directory}/{name}", "w") as f:
            f.write(data)
    return tls.ray_env(directory)

"""SSHBackend against a real OpenSSH server on loopback and the session's real Ray head: a node
is installed from a wheelhouse, joins, is found again (idempotent add) and stopped alone; host
keys, client keys, the node's Python and a failed join are checked for what they leave behind.
sage-ops itself is the daemon's own wheel, shipped over SFTP (own_wheel.py); here the rest comes
from a wheelhouse (offline), in test_nodes.py from the node's package index."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from sshd import Sshd

import sage_ops
from sage_ops.nodes.base import NODE_ENV, JoinPlan, JoinResult, NodeTarget, StepFailed, StepTimeouts, node_resource
from sage_ops.nodes.own_wheel import KEEP, OwnWheel, own_wheel, package_dir
from sage_ops.nodes.ssh import SSHBackend

ROOT = Path(__file__).resolve().parent.parent
NAME = "ssh-tpu-1"
# A driver of its own (never ray.init in the pytest process): the nodes Ray lists, or a task.
DRIVER = r"""
import json, os, sys, time
import ray
ray.init(address=os.environ["SAGE_OPS_RAY__ADDRESS"], logging_level="ERROR", log_to_driver=False)
mode, arg, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
if mode == "wait":  # until an alive node has resource `arg` ("!arg": until none has)
    gone, res = arg.startswith("!"), arg.lstrip("!")
    deadline = time.time() + timeout
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        hit = [n["NodeID"] for n in alive if res in n["Resources"]]
        if bool(hit) != gone or time.time() > deadline:
            break
        time.sleep(0.2)
    print(json.dumps({"hit": hit, "nodes": [n["Resources"] for n in alive]}))
else:
    @ray.remote(resources={arg: 1})
    def where():
        return ray.get_runtime_context().get_node_id(), os.environ.get("SAGE_OPS_NODE")
    print(json.dumps(ray.get(where.remote(), timeout=timeout)))
"""


def drive(ray_env: dict[str, str], mode: str, arg: str, timeout: float) -> Any:
    env = {k: v for k, v in os.environ.items() if k != NODE_ENV}
    out = subprocess.run([sys.executable, "-c", DRIVER, mode, arg, str(timeout)], env={**env, **ray_env},
                         capture_output=True, text=True, timeout=timeout + 90)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def local_pids(name: str) -> list[int]:
    """Processes on this machine that carry the node's environment entry (the node is local)."""
    want, pids = f"{NODE_ENV}={name}".encode(), []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and want in (p / "environ").read_bytes().split(b"\0"):
                pids.append(int(p.name))
        except OSError:
            pass
    return pids


def kill_local(name: str) -> None:
    for pid in local_pids(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Joined:
    result: JoinResult
    events: list[tuple[str, str, str]]
    known_hosts: Path
    seconds: float


# `sshd` and `wheelhouse` are session fixtures (conftest.py), shared with test_nodes.py


def make_target(server: Sshd, known_hosts: Path, **kw: Any) -> NodeTarget:
    return NodeTarget("127.0.0.1", user=getpass.getuser(), port=server.port, key_file=str(server.client_key),
                      known_hosts=str(known_hosts), **kw)


def make_plan(ray_env: dict[str, str], name: str, wheel: OwnWheel, wheel_dir: Path | None, **kw: Any) -> JoinPlan:
    # Ray rewrites 127.0.0.1 in a join address: join by host name, as conftest.RayNode does.
    port = ray_env["SAGE_OPS_RAY__ADDRESS"].rsplit(":", 1)[1]
    return JoinPlan(name=name, head_address=f"{socket.gethostname()}:{port}", ray_version=metadata.version("ray"),
                    sage_ops_version=wheel.version, sage_ops_wheel=wheel.path, python=sys.version_info[:2],
                    ray_token=Path(ray_env["RAY_AUTH_TOKEN_PATH"]).read_text(), resources={"TPU": 1}, num_cpus=1,
                    wheel_dir=wheel_dir, node_ip="127.0.0.1", env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}, **kw)


def listed_by(ray_env: dict[str, str]) -> Any:
    def listed(name: str, timeout: float) -> str | None:
        hit = drive(ray_env, "wait", node_resource(name), timeout)["hit"]
        return hit[0] if hit else None

    return listed


def fails(step: str, call: Any) -> StepFailed:
    with pytest.raises(StepFailed) as info:
        call()
    assert info.value.step == step, str(info.value)
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)
    return info.value


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> OwnWheel:
    """This sage-ops as the wheel the daemon ships to nodes."""
    return own_wheel(tmp_path_factory.mktemp("own-wheel"))


@pytest.fixture(scope="module")
def joined(sshd: Sshd, own: OwnWheel, wheelhouse: Path, ray_head: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The node NAME, joined over SSH into a known_hosts file (and directory) that did not exist."""
    known = tmp_path_factory.mktemp("client") / "ssh" / "known_hosts"
    events: list[tuple[str, str, str]] = []
    start = time.monotonic()
    target = make_target(sshd, known, accept_new_host_key=True)
    result = SSHBackend().join(target, make_plan(ray_head, NAME, own, wheelhouse), lambda *e: events.append(e),
                               listed_by(ray_head))
    try:
        yield Joined(result, events, known, time.monotonic() - start)
    finally:
        try:
            SSHBackend().stop(make_target(sshd, known), NAME, 30)
        finally:
            kill_local(NAME)


def test_join_installs_and_the_node_takes_a_task(joined: Joined, sshd: Sshd, own: OwnWheel,
                                                 ray_head: dict[str, str]) -> None:
    r = joined.result
    assert r.installed and not r.already_joined and r.ray_node_id
    assert r.python.startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    assert [s for s, state, _ in joined.events if state == "done"] == ["connect", "check python", "install",
                                                                     "join ray", "verify"]
    assert set(r.seconds) == {"connect", "check python", "install", "join ray", "verify"}
    # the host key was recorded the way OpenSSH does, in a file and directory only we can read
    assert joined.known_hosts.read_text() == sshd.known_hosts_line()
    assert joined.known_hosts.stat().st_mode & 0o777 == 0o600
    assert joined.known_hosts.parent.stat().st_mode & 0o777 == 0o700
    # the node's files are under its $HOME; the token file is private and never shown
    token = Path(ray_head["RAY_AUTH_TOKEN_PATH"]).read_text()
    assert (sshd.home / ".sage-ops" / "venv" / "bin" / "ray").exists()
    # sage-ops is the shipped build of this source, the rest came from the wheelhouse
    assert sshd.installed(".sage-ops/venv") == [own.version]
    assert (sshd.home / ".sage-ops" / "dist" / own.path.name).read_bytes() == own.path.read_bytes()
    install = next(detail for s, state, detail in joined.events if (s, state) == ("install", "done"))
    assert "wheels copied" in install
    token_file = sshd.home / ".sage-ops" / f"ray-token-{NAME}"
    assert token_file.read_text() == token and token_file.stat().st_mode & 0o777 == 0o600
    assert not any(token in detail for _, _, detail in joined.events)
    # Ray lists it with its resources, and a task that needs them runs there, knowing its node
    nodes = drive(ray_head, "wait", "TPU", 30)["nodes"]
    mine = [n for n in nodes if node_resource(NAME) in n]
    assert len(mine) == 1 and mine[0]["TPU"] == 1 and mine[0]["CPU"] == 1
    node_id, env_name = drive(ray_head, "task", "TPU", 120)
    assert node_id == r.ray_node_id
    assert env_name == NAME  # Ray workers inherit the raylet's environment: a job can know its node
    print(f"\nfresh join {joined.seconds:.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in r.seconds.items()))


def test_second_join_is_idempotent(joined: Joined, sshd: Sshd, own: OwnWheel, wheelhouse: Path,
                                   ray_head: dict[str, str]) -> None:
    events: list[tuple[str, str, str]] = []
    start = time.monotonic()
    again = SSHBackend().join(make_target(sshd, joined.known_hosts), make_plan(ray_head, NAME, own, wheelhouse),
                              lambda *e: events.append(e), listed_by(ray_head))
    took = time.monotonic() - start
    assert not again.installed and again.already_joined and again.ray_node_id == joined.result.ray_node_id
    assert ("install", "skip") in [(s, state) for s, state, _ in events]
    assert ("join ray", "skip") in [(s, state) for s, state, _ in events]
    print(f"\nre-join {took:.1f} s")


def test_a_new_build_replaces_the_old_one(joined: Joined, sshd: Sshd, wheelhouse: Path, ray_head: dict[str, str],
                                          tmp_path: Path) -> None:
    """An edited source is a new wheel: the node's sage-ops is reinstalled (the node stays up),
    and the old build's wheel is gone from the node."""
    new = own_wheel(tmp_path / "cache", edited_copy(tmp_path))
    events: list[tuple[str, str, str]] = []
    again = SSHBackend().join(make_target(sshd, joined.known_hosts), make_plan(ray_head, NAME, new, wheelhouse),
                              lambda *e: events.append(e), listed_by(ray_head))
    assert again.installed and again.already_joined
    assert sshd.installed(".sage-ops/venv") == [new.version]
    assert [p.name for p in (sshd.home / ".sage-ops" / "dist").iterdir()] == [new.path.name]


def test_failure_after_install_leaves_the_node_clean(joined: Joined, sshd: Sshd, own: OwnWheel, wheelhouse: Path,
                                                     ray_head: dict[str, str]) -> None:
    """A head that does not answer: the join fails in "join ray" and what this call made (its
    venv, token file, processes) is gone, while a venv that was there before is kept."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    timeouts = StepTimeouts(join_ray=3, verify=5)
    target = make_target(sshd, joined.known_hosts)
    fresh = sshd.home / "venv-fail"
    plan = replace(make_plan(ray_head, "ssh-fail", own, wheelhouse, venv=str(fresh), timeouts=timeouts),
                   head_address=f"{socket.gethostname()}:{closed}")
    events: list[tuple[str, str, str]] = []
    err = fails("join ray", lambda: SSHBackend().join(target, plan, lambda *e: events.append(e),
                                                      listed_by(ray_head)))
    assert "timed out after 3 s" in str(err)
    assert ("install", "done") in [(s, state) for s, state, _ in events]  # it did install, then undid it
    assert not fresh.exists()
    assert not (sshd.home / ".sage-ops" / "ray-token-ssh-fail").exists()
    assert not local_pids("ssh-fail")
    # the shared venv existed before this call: it stays
    fails("join ray", lambda: SSHBackend().join(target, replace(plan, venv="~/.sage-ops/venv"), lambda *e: None,
                                                listed_by(ray_head)))
    assert (sshd.home / ".sage-ops" / "venv" / "bin" / "ray").exists()
    assert not local_pids("ssh-fail")


def test_stop_removes_only_that_node(joined: Joined, sshd: Sshd, ray_head: dict[str, str]) -> None:
    target = make_target(sshd, joined.known_hosts)
    start = time.monotonic()
    stopped = SSHBackend().stop(target, NAME, 30)
    took = time.monotonic() - start
    assert stopped >= 2  # the raylet and its agents
    assert not local_pids(NAME)
    seen = drive(ray_head, "wait", "!" + node_resource(NAME), 60)
    assert not seen["hit"]
    assert any("node:__internal_head__" in n for n in seen["nodes"])  # the head lives on
    assert not (sshd.home / ".sage-ops" / f"ray-token-{NAME}").exists()
    assert SSHBackend().stop(target, NAME, 5) == 0
    print(f"\nstop {took:.1f} s ({stopped} processes)")


def test_unknown_host_key_is_refused_without_the_flag(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    other = "otherhost " + " ".join(Path(f"{sshd.wrong_key}.pub").read_text().split()[:2]) + "\n"
    known.write_text(other)
    plan = JoinPlan(NAME, "127.0.0.1:1", "0", "0", (3, 11))
    err = fails("connect", lambda: SSHBackend().join(make_target(sshd, known), plan, lambda *e: None,
                                                     lambda *a: None))
    assert f"host key of 127.0.0.1:{sshd.port} is not known (ed25519 SHA256:" in str(err)
    assert "--accept-new-host-key" in str(err)
    assert known.read_text() == other
    err = fails("stop", lambda: SSHBackend().stop(make_target(sshd, known), NAME, 5))
    assert "--accept-new-host-key" in str(err)


def test_changed_host_key_is_always_refused(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    impostor = Path(f"{sshd.wrong_key}.pub").read_text().split()
    line = f"[127.0.0.1]:{sshd.port} {impostor[0]} {impostor[1]}\n"
    known.write_text(line)
    plan = JoinPlan(NAME, "127.0.0.1:1", "0", "0", (3, 11))
    err = fails("connect", lambda: SSHBackend().join(make_target(sshd, known, accept_new_host_key=True), plan,
                                                     lambda *e: None, lambda *a: None))
    assert f"host key of 127.0.0.1:{sshd.port} has CHANGED" in str(err) and str(known) in str(err)
    assert known.read_text() == line


def test_wrong_or_missing_client_key(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    plan = JoinPlan(NAME, "127.0.0.1:1", "0", "0", (3, 11))
    target = replace(make_target(sshd, known), key_file=str(sshd.wrong_key))
    err = fails("connect", lambda: SSHBackend().join(target, plan, lambda *e: None, lambda *a: None))
    assert f"authentication failed for {getpass.getuser()}@127.0.0.1:{sshd.port} with key {sshd.wrong_key}" in str(err)
    err = fails("connect", lambda: SSHBackend().join(replace(target, key_file=str(tmp_path / "nope")), plan,
                                                     lambda *e: None, lambda *a: None))
    assert "does not exist" in str(err)
    err = fails("connect", lambda: SSHBackend().join(replace(target, port=_closed_port()), plan, lambda *e: None,
                                                     lambda *a: None))
    assert "refused the connection" in str(err)


def test_missing_python_is_named(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    plan = JoinPlan(NAME, "127.0.0.1:1", "0", "0", (3, 11), python_bin="python3.99", venv=str(tmp_path / "venv"))
    events: list[tuple[str, str, str]] = []
    err = fails("check python", lambda: SSHBackend().join(make_target(sshd, known), plan,
                                                          lambda *e: events.append(e), lambda *a: None))
    assert "python3.99 not found on 127.0.0.1" in str(err) and "--python" in str(err)
    assert events[-1][:2] == ("check python", "fail") and not (tmp_path / "venv").exists()
    mismatch = replace(plan, python_bin="python3", python=(3, 99))
    err = fails("check python", lambda: SSHBackend().join(make_target(sshd, known), mismatch, lambda *e: None,
                                                          lambda *a: None))
    assert "the head runs 3.99" in str(err)


def test_pip_failure_is_one_line_and_the_new_venv_goes(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    junk = tmp_path / "wheels"
    junk.mkdir()
    (junk / "junk-1.0-py3-none-any.whl").write_bytes(b"not a wheel")
    venv = sshd.home / "venv-pip"
    plan = JoinPlan(NAME, "127.0.0.1:1", "2.60.0", "0.1.0", sys.version_info[:2], wheel_dir=junk, venv=str(venv))
    backend = SSHBackend(workdir="~/other-workdir")
    err = fails("install", lambda: backend.join(make_target(sshd, known), plan, lambda *e: None, lambda *a: None))
    assert str(err) == "install: ERROR: No matching distribution found for ray[default]==2.60.0"
    assert not venv.exists() and (sshd.home / "other-workdir" / "wheels" / "junk-1.0-py3-none-any.whl").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the wheel the daemon ships (own_wheel.py): no sshd needed ----------------------------------


def edited_copy(dest: Path) -> Path:
    """A copy of this sage_ops package with one file changed (a comment): an edited checkout."""
    package = Path(shutil.copytree(package_dir(), dest / "sage_ops", ignore=shutil.ignore_patterns("__pycache__")))
    with (package / "nodes" / "base.py").open("a") as f:
        f.write("# edited\n")
    return package


def test_own_wheel_is_built_once_per_version_and_source(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = own_wheel(cache)
    assert first.built and first.path.parent == cache
    assert first.version.startswith(f"{sage_ops.__version__}+src")
    assert first.path.name == f"sage_ops-{first.version}-py3-none-any.whl"
    inode, data = first.path.stat().st_ino, first.path.read_bytes()
    again = own_wheel(cache)
    assert not again.built and again == replace(first, built=False)
    assert again.path.stat().st_ino == inode and again.path.read_bytes() == data  # reused, not rebuilt
    copy = Path(shutil.copytree(package_dir(), tmp_path / "same" / "sage_ops"))
    assert own_wheel(tmp_path / "other", copy).version == first.version  # the content counts, not the place
    edited = own_wheel(cache, edited_copy(tmp_path))
    assert edited.built and edited.version != first.version
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.path.name, edited.path.name])


def test_own_wheel_cache_keeps_the_newest(tmp_path: Path) -> None:
    package = edited_copy(tmp_path)
    made = []
    for n in range(KEEP + 2):
        with (package / "nodes" / "base.py").open("a") as f:
            f.write(f"# edit {n}\n")
        made.append(own_wheel(tmp_path / "cache", package).path.name)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(made[-KEEP:])


def test_own_wheel_is_a_wheel_pip_installs_and_an_installed_copy_rebuilds_it(tmp_path: Path) -> None:
    wheel = own_wheel(tmp_path / "cache")
    with zipfile.ZipFile(wheel.path) as z:
        names = z.namelist()
        meta = z.read(f"sage_ops-{wheel.version}.dist-info/METADATA").decode()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert {"sage_ops/tui/app.tcss", "sage_ops/server/storage/migrations/script.py.mako"} <= set(names)  # package data
    assert f"Version: {wheel.version}\n" in meta
    assert f"Requires-Dist: ray[default]=={metadata.version('ray')}\n" in meta
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                          str(target), str(wheel.path)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    # a non-editable install (pipx, `pip install .`): its files and metadata give the same wheel
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
            "from sage_ops.nodes.own_wheel import own_wheel, package_dir; "
            "print(package_dir()); print(own_wheel(Path(sys.argv[2])).path)")
    out = subprocess.run([sys.executable, "-c", code, str(target), str(tmp_path / "rebuilt")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    where, rebuilt = out.stdout.split()
    assert Path(where) == target / "sage_ops"
    assert Path(rebuilt).read_bytes() == wheel.path.read_bytes()

"""Ray is ours and private: the daemon's head lives in a 0700 directory of its own with a name
nobody can predict, is never a head another user started (`/tmp/ray`, $RAY_ADDRESS, a planted
record), follows no planted symlink, and opens no Ray client server or metrics port unless asked.

Real parts: a real Unix user (created here, as root) plays the attacker and runs a Ray head of its
own with the default /tmp/ray; one daemon starts its own head next to it (two heads for the
module: ~1.2 GB), is restarted once with $RAY_ADDRESS pointing at the foreign head, and is
stopped with --ray. The deletion rules are also checked without Ray (rayhead.stop on records)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

from sage_ops import rayhead

RAY_MAIN = "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
FOREIGN_MARK = "SGO_FOREIGN_RAY"
AF_UNIX_MAX = 107  # sizeof(sun_path) - 1 on Linux
TEMP_PREFIX = "sage-ops-rt-"  # rayhead.TEMP_PREFIX: a planted dir must look like ours


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stranger:
    """A real Unix user other than us (useradd, as root): the attacker on the same machine."""

    def __init__(self) -> None:
        self.name = f"sgo{uuid.uuid4().hex[:8]}"
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", self.name], check=True,
                       capture_output=True)
        self.uid = pwd.getpwnam(self.name).pw_uid
        self.mark = uuid.uuid4().hex
        # this interpreter may sit where other users cannot reach (pyenv under /root): a venv of the
        # system's Python of the same minor version, seeing this environment's packages (Ray)
        self.venv = Path(tempfile.mkdtemp(prefix="sgo-venv-", dir="/tmp"))
        self.venv.chmod(0o755)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        base = shutil.which(version, path="/usr/bin:/usr/local/bin")
        if base is None:
            self.remove()
            pytest.skip(f"no system {version} for another user to run Ray")
        subprocess.run([base, "-m", "venv", "--without-pip", str(self.venv)], check=True, capture_output=True)
        site = next(self.venv.glob("lib/python*/site-packages"))
        (site / "sage_ops_test.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
        self.python = str(self.venv / "bin" / "python")

    def run(self, *cmd: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """`cmd` as this user. runuser keeps the environment (only HOME, SHELL, USER and LOGNAME
        change), so the test session's mark reaches its processes, and so does our own mark."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SAGE_OPS_"))}
        return subprocess.run(["runuser", "-u", self.name, "--", *cmd], env={**env, FOREIGN_MARK: self.mark},
                              cwd="/tmp", capture_output=True, text=True, timeout=timeout, start_new_session=True)

    def processes(self) -> set[int]:
        """Every process this user runs that we started (the foreign head's)."""
        return rayhead.marked(rayhead.processes(), f"{FOREIGN_MARK}={self.mark}".encode(), any_user=True)[0]

    def remove(self) -> None:
        rayhead.terminate(self.processes)
        subprocess.run(["userdel", "--remove", self.name], capture_output=True)
        shutil.rmtree(self.venv, ignore_errors=True)


def is_root() -> bool:
    return os.geteuid() == 0 and shutil.which("useradd") is not None and shutil.which("runuser") is not None


def listening(pids: set[int]) -> set[int]:
    """The TCP ports these processes listen on (ss -ltnp)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    ports = set()
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            ports.add(int(line.split()[3].rsplit(":", 1)[1]))
    return ports


def answers_metrics(port: int) -> bool:
    """Does an unauthenticated GET /metrics on 127.0.0.1:`port` get Prometheus text?"""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            return b"# TYPE" in r.read(65536)
    except Exception:  # noqa: BLE001 - not HTTP, refused, 401/404...: no metrics
        return False


def sockets(root: Path) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files
            if stat.S_ISSOCK(os.lstat(os.path.join(d, f)).st_mode)]


def pids_of(uid: int, text: str) -> list[int]:
    return sorted(p.pid for p in rayhead.processes().values() if p.uid == uid and text in p.cmdline)


@pytest.fixture(scope="module")
def seen() -> Iterator[dict[str, Any]]:
    if not is_root():
        pytest.skip("needs root (useradd, runuser) to play another Unix user")
    facts: dict[str, Any] = {}
    stranger = Stranger()
    d = Daemon({}, {"ray": {"num_cpus": 1}})  # address: auto (the default)
    planted: list[Path] = []
    # Ray's default temp dir may be left by an earlier test's node (owned by us or a test user):
    # the stranger must be the one who makes it, so ours waits aside and comes back after
    aside = Path(tempfile.mkdtemp(prefix="sgo-ray-aside-", dir="/tmp")) / "ray"
    if os.path.lexists("/tmp/ray"):
        os.rename("/tmp/ray", aside)
    try:
        # the stranger's own head, Ray's defaults: /tmp/ray, ray_current_cluster in it
        for _ in range(3):  # a free port can be taken before Ray binds it: try another
            port = free_port()
            started = stranger.run(stranger.python, "-c", RAY_MAIN, "start", "--head", "--node-ip-address=127.0.0.1",
                                   f"--port={port}", f"--ray-client-server-port={free_port()}",
                                   "--include-dashboard=false", "--num-cpus=1", "--disable-usage-stats")
            if started.returncode == 0:
                break
            rayhead.terminate(stranger.processes)
        assert started.returncode == 0, started.stdout + started.stderr
        facts["foreign"] = f"127.0.0.1:{port}"
        # a symlink at the old predictable temp dir name, to the daemon's home (0700, ours)
        digest = hashlib.sha1(str(d.state.resolve()).encode()).hexdigest()[:10]
        old = Path(f"/tmp/sage-ops-ray-{digest}")
        planted.append(old)
        stranger.run("ln", "-s", str(d.home), str(old))
        facts["home_mode_before"] = stat.S_IMODE(d.home.stat().st_mode)
        # a record in the state dir naming the foreign head, its "temp dir" under a symlink the
        # stranger planted to a directory of ours with something in it
        victim = Path(tempfile.mkdtemp(prefix="sgo-victim-", dir="/tmp"))
        (victim / "keep").write_text("mine")
        planted.append(victim)
        link = Path(f"/tmp/{TEMP_PREFIX}{uuid.uuid4().hex[:8]}")
        planted.append(link)
        stranger.run("ln", "-s", str(victim), str(link))
        rec = rayhead.record_file(d.state)
        rec.parent.mkdir(parents=True, mode=0o700)
        rec.write_text(json.dumps({"address": facts["foreign"], "temp_dir": str(link / "r")}))
        facts["victim"] = victim

        d.start()
        facts["record"] = rayhead.load_record(d.state) or {}
        facts["health"] = json.loads(d.run("health", "--json", check=True).stdout)
        facts["foreign_dispatchers"] = pids_of(stranger.uid, "Dispatcher")
        temp = Path(facts["record"]["temp_dir"])
        facts["private_stat"] = os.lstat(temp.parent)
        facts["sockets"] = sockets(temp)
        facts["stranger_ls"] = stranger.run("ls", str(temp / "session_latest" / "sockets"))
        head = set(rayhead.find(d.state).pids)
        facts["client_servers"] = [pid for pid in head if "ray.util.client.server" in rayhead.processes()[pid].cmdline]
        facts["ports"] = listening(head)
        facts["metrics_ports"] = sorted(p for p in facts["ports"] if answers_metrics(p))
        facts["home_mode_after"] = stat.S_IMODE(d.home.stat().st_mode)

        # a restart with $RAY_ADDRESS naming the foreign head, as a shell of its starter might
        d.stop()
        d.env["RAY_ADDRESS"] = facts["foreign"]
        d.start()
        facts["health_ray_address"] = json.loads(d.run("health", "--json", check=True).stdout)
        facts["foreign_dispatchers_ray_address"] = pids_of(stranger.uid, "Dispatcher")
        del d.env["RAY_ADDRESS"]
        facts["stop_ray"] = d.run("daemon", "stop", "--ray", timeout=90)
        yield facts
    finally:
        d.run("daemon", "stop", "--ray", timeout=90)
        stranger.remove()
        with contextlib.suppress(OSError):
            if Path("/tmp/ray").lstat().st_uid == stranger.uid:
                shutil.rmtree("/tmp/ray")
        if os.path.lexists(aside) and not os.path.lexists("/tmp/ray"):
            os.rename(aside, "/tmp/ray")
        shutil.rmtree(aside.parent, ignore_errors=True)
        for path in planted:
            if path.is_symlink():
                path.unlink()
            else:
                shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(d.home, ignore_errors=True)


# -- the head's temp dir -------------------------------------------------------------------------
def test_the_temp_dir_is_under_a_directory_of_ours(seen: dict[str, Any]) -> None:
    assert seen["private_stat"].st_uid == os.getuid()


def test_that_directory_is_0700(seen: dict[str, Any]) -> None:
    assert stat.S_IMODE(seen["private_stat"].st_mode) == 0o700


def test_that_directory_is_no_symlink(seen: dict[str, Any]) -> None:
    assert stat.S_ISDIR(seen["private_stat"].st_mode)


def test_the_temp_dir_is_not_the_old_predictable_name(seen: dict[str, Any]) -> None:
    assert not seen["record"]["temp_dir"].startswith("/tmp/sage-ops-ray-")


def test_another_user_cannot_reach_rays_sockets(seen: dict[str, Any]) -> None:
    assert "Permission denied" in seen["stranger_ls"].stderr, seen["stranger_ls"]


def test_the_head_made_unix_sockets(seen: dict[str, Any]) -> None:
    assert seen["sockets"]  # what the next test measures


def test_rays_socket_paths_fit_af_unix(seen: dict[str, Any]) -> None:
    assert max(map(len, seen["sockets"])) <= AF_UNIX_MAX, seen["sockets"]


# -- planted symlinks and records ----------------------------------------------------------------
def test_a_symlink_at_the_old_name_changes_no_permission(seen: dict[str, Any]) -> None:
    assert seen["home_mode_after"] == seen["home_mode_before"]


def test_a_planted_record_is_not_joined(seen: dict[str, Any]) -> None:
    assert seen["health"]["ray"]["address"] != seen["foreign"]


def test_a_planted_record_gets_a_fresh_private_dir(seen: dict[str, Any]) -> None:
    assert Path(seen["record"]["temp_dir"]).parent.parent == Path("/tmp")


def test_a_planted_symlinked_dir_is_not_emptied(seen: dict[str, Any]) -> None:
    assert (seen["victim"] / "keep").read_text() == "mine"


def test_a_planted_symlinked_dir_keeps_its_mode(seen: dict[str, Any]) -> None:
    assert stat.S_IMODE(seen["victim"].stat().st_mode) == 0o700


# -- a foreign head ------------------------------------------------------------------------------
def test_auto_uses_our_own_head(seen: dict[str, Any]) -> None:
    assert seen["health"]["ray"]["address"] == seen["record"]["address"]


def test_auto_puts_no_dispatcher_on_the_foreign_head(seen: dict[str, Any]) -> None:
    assert seen["foreign_dispatchers"] == []


def test_ray_address_in_the_environment_is_not_followed(seen: dict[str, Any]) -> None:
    assert seen["health_ray_address"]["ray"]["address"] == seen["record"]["address"]


def test_ray_address_puts_no_dispatcher_on_the_foreign_head(seen: dict[str, Any]) -> None:
    assert seen["foreign_dispatchers_ray_address"] == []


# -- ports ---------------------------------------------------------------------------------------
def test_no_ray_client_server_runs(seen: dict[str, Any]) -> None:
    assert seen["client_servers"] == []


def test_port_10001_is_not_ours(seen: dict[str, Any]) -> None:
    assert 10001 not in seen["ports"]


def test_no_port_of_the_head_serves_metrics_without_auth(seen: dict[str, Any]) -> None:
    assert seen["metrics_ports"] == []


# -- the end -------------------------------------------------------------------------------------
def test_stop_ray_removes_the_private_dir(seen: dict[str, Any]) -> None:
    assert not Path(seen["record"]["temp_dir"]).parent.exists()


# -- what `stop` deletes (no Ray needed) ---------------------------------------------------------
def recorded(temp: Path) -> Path:
    """A state dir whose head record names `temp` as the head's temp dir (no head runs)."""
    state = Path(tempfile.mkdtemp(prefix="sgo-state-", dir="/tmp"))
    rayhead.record_file(state).parent.mkdir()
    rayhead.record_file(state).write_text(json.dumps({"address": "127.0.0.1:1", "temp_dir": str(temp)}))
    return state


@pytest.fixture
def private() -> Iterator[Path]:
    """A private dir as the daemon makes one, with Ray's temp dir in it."""
    temp = rayhead.new_temp_dir()
    temp.mkdir(mode=0o777)
    (temp / "ray_current_cluster").write_text("127.0.0.1:1")
    yield temp.parent
    shutil.rmtree(temp.parent, ignore_errors=True)


def test_new_private_dirs_are_0700(private: Path) -> None:
    assert stat.S_IMODE(private.lstat().st_mode) == 0o700


def test_new_private_dirs_have_fresh_names(private: Path) -> None:
    other = rayhead.new_temp_dir().parent
    other.rmdir()
    assert other != private


def test_new_private_dirs_keep_socket_paths_short(private: Path) -> None:
    # Ray's longest: <temp>/session_<date>_<time>_<usec>_<pid, up to 7 digits>/sockets/dash_MetricsHead
    longest = f"{private}/r/session_2026-01-01_00-00-00_000000_4194304/sockets/dash_MetricsHead"
    assert len(longest) <= AF_UNIX_MAX


def test_stop_removes_our_private_dir(private: Path) -> None:
    state = recorded(private / "r")
    rayhead.stop(state)
    shutil.rmtree(state)
    assert not private.exists()


def test_stop_leaves_a_group_writable_dir(private: Path) -> None:
    private.chmod(0o770)
    state = recorded(private / "r")
    rayhead.stop(state)
    shutil.rmtree(state)
    assert (private / "r" / "ray_current_cluster").exists()


def test_stop_leaves_a_dir_of_another_user(private: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    os.chown(private, 65534, 65534)
    state = recorded(private / "r")
    rayhead.stop(state)
    shutil.rmtree(state)
    assert (private / "r" / "ray_current_cluster").exists()


def test_stop_follows_no_symlink(private: Path) -> None:
    link = Path(f"/tmp/{TEMP_PREFIX}{uuid.uuid4().hex[:8]}")
    link.symlink_to(private)
    state = recorded(link / "r")
    try:
        rayhead.stop(state)
    finally:
        link.unlink()
        shutil.rmtree(state)
    assert (private / "r" / "ray_current_cluster").exists()


def test_stop_leaves_a_private_dir_in_a_dir_others_may_swap_it_in(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by all and not sticky: another user could rename ours away
    temp = rayhead.new_temp_dir(shared)
    temp.mkdir()
    state = recorded(temp)
    rayhead.stop(state)
    shutil.rmtree(state)
    assert temp.exists()


def test_stop_removes_a_private_dir_under_another_root_of_ours(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    temp = rayhead.new_temp_dir(root)
    temp.mkdir()
    state = recorded(temp)
    rayhead.stop(state)
    shutil.rmtree(state)
    assert not temp.parent.exists()


def test_stop_leaves_a_dir_of_ours_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir(mode=0o700)
    (tmp_path / "mine" / "r").mkdir()
    state = recorded(tmp_path / "mine" / "r")
    rayhead.stop(state)
    shutil.rmtree(state)
    assert (tmp_path / "mine" / "r").exists()


def test_stop_leaves_the_old_predictable_dir(tmp_path: Path) -> None:
    old = Path(f"/tmp/sage-ops-ray-{uuid.uuid4().hex[:10]}")
    old.mkdir(mode=0o700)
    state = recorded(old)
    try:
        rayhead.stop(state)
        left = old.exists()
    finally:
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(state)
    assert left

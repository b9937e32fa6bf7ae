"""A real OpenSSH server for tests: loopback, a free port, its own host key, client keys and
home directory (so a node's ~/.sage-ops lands in a temp dir, not in the real home)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sage-ops-test", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)


def pip_env() -> dict[str, str]:
    """pip on the "node" as this machine's user has it: its sessions' HOME is a temp dir, where pip
    would miss the user's pip.conf (index, mirror) and cache; so point at them, and pass on the
    PIP_* variables of this process."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_") and '"' not in v}
    home = Path.home()
    for conf in (Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf",
                 home / ".pip" / "pip.conf"):
        if conf.is_file():
            env.setdefault("PIP_CONFIG_FILE", str(conf))
            break
    env.setdefault("PIP_CACHE_DIR", str(Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "pip"))
    return env


def run_marks() -> dict[str, str]:
    """The test session's (or benchmark run's) marker for its sessions too: what a node starts
    over SSH (its Ray) is found, and stopped, at the end of the run (tests/conftest.py)."""
    return {k: os.environ[k] for k in ("SGO_TEST_SESSION", "SGO_BENCH_RUN") if k in os.environ}


class Sshd:
    """`/usr/sbin/sshd -D -e` on 127.0.0.1:<free port> for the current user (or on `address`:22 in
    the network namespace `netns`: a host of its own, see netns.py). `home` is the HOME its
    sessions see (sshd's SetEnv, with pip_env()); `client_key` is authorized, `wrong_key` is not."""

    def __init__(self, address: str = "127.0.0.1", netns: str | None = None) -> None:
        if not Path(SSHD).exists() or not shutil.which("ssh-keygen"):
            pytest.skip("OpenSSH server (/usr/sbin/sshd) is not installed")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="sgo-sshd-", dir="/tmp"))
        self.home = self.dir / "home"
        self.home.mkdir(mode=0o700)
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "id_ed25519"
        self.wrong_key = self.dir / "id_wrong"
        for key in (self.host_key, self.client_key, self.wrong_key):
            _keygen(key)
        (self.dir / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        self.address, self.netns = address, netns
        self.port = 22 if netns else _free_port()
        self.log = self.dir / "sshd.log"
        self.start()

    def start(self) -> None:
        cmd = [SSHD, "-D", "-e", "-f", "/dev/null", "-p", str(self.port), "-h", str(self.host_key),
               "-o", f"AuthorizedKeysFile={self.dir}/authorized_keys", "-o", "PidFile=none",
               "-o", "StrictModes=no", "-o", "PermitRootLogin=prohibit-password", "-o", "UsePAM=no",
               "-o", f"ListenAddress={self.address}", "-o", "PasswordAuthentication=no",
               "-o", "Subsystem=sftp internal-sftp",
               "-o", "SetEnv=" + " ".join(f'"{k}={v}"' for k, v in
                                          {"HOME": str(self.home), **pip_env(), **run_marks()}.items())]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"),
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection((self.address, self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("sshd did not listen within 15 s") from None
                time.sleep(0.05)

    def new_host_key(self) -> None:
        """The machine gets another host key (reinstalled, or somebody in the middle)."""
        self.stop()
        for old in (self.host_key, Path(f"{self.host_key}.pub")):
            old.unlink()
        _keygen(self.host_key)
        self.start()

    def known_hosts_line(self) -> str:
        """The host key as a known_hosts line, in the form OpenSSH uses (`[HOST]:PORT` off port 22)."""
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {kind} {blob}\n"

    def installed(self, venv: str) -> list[str]:
        """The sage-ops versions installed in the node's venv `venv` (relative to its HOME)."""
        infos = (self.home / venv).glob("lib/python*/site-packages/sage_ops-*.dist-info")
        return sorted(p.name.removeprefix("sage_ops-").removesuffix(".dist-info") for p in infos)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

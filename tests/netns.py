"""Distinct hosts on one machine for tests: a bridge with an address of its own (where the daemon's
Ray head listens) and network namespaces on it, each with its own address, loopback and sshd (so a
host's Ray, ports and loopback are its own, as on another machine; the file system and the users
are still this machine's). Made inside the test run, with loopback and veth only, and removed
with everything started in them. Needs root and iproute2."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sshd import Sshd


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def _free_subnet() -> str:
    """A 10.x.y.0/24 no interface here has an address in."""
    used = [ipaddress.ip_interface(w.split()[3]) for w in _ip("-4", "-o", "addr").splitlines()]
    while True:
        net = ipaddress.ip_network(f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}.0/24")
        if not any(u.network.overlaps(net) for u in used):
            return str(net.network_address).rsplit(".", 1)[0]


class Network:
    """`hosts` namespaces on a bridge: `gateway` is this machine's address there, `hosts[i]` the
    sshd of host i (at 10.x.y.(11+i), port 22, user root)."""

    def __init__(self, hosts: int) -> None:
        if os.geteuid() != 0 or not shutil.which("ip"):
            pytest.skip("network namespaces need root and iproute2 (ip)")
        tag = secrets.token_hex(2)
        prefix = _free_subnet()
        self.bridge = f"sgob{tag}"
        self.gateway = f"{prefix}.1"
        self.namespaces: list[str] = []
        self.hosts: list[Sshd] = []
        try:
            _ip("link", "add", "name", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(hosts):
                ns, veth, address = f"sgo{tag}{i}", f"sgv{tag}{i}", f"{prefix}.{11 + i}"
                _ip("netns", "add", ns)
                self.namespaces.append(ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "master", self.bridge, "up")
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "route", "add", "default", "via", self.gateway)
                self.hosts.append(Sshd(address, ns))
            # one key for all of them, as a pool has
            self.key = self.hosts[0].client_key
            for host in self.hosts[1:]:
                (host.dir / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        except BaseException:
            self.cleanup()
            raise

    def pids(self, ns: str) -> list[int]:
        """The processes in namespace `ns` (its sshd and what its sessions started, a Ray among them)."""
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30).stdout
        return [int(p) for p in out.split()]

    def cleanup(self) -> None:
        for host in self.hosts:
            host.cleanup()
        for ns in self.namespaces:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in self.pids(ns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + 10
                while self.pids(ns) and time.monotonic() < deadline:
                    time.sleep(0.1)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)

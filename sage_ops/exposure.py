"""Where a bearer token may travel and where a daemon may listen in clear: one set of rules for
the CLI, both Python clients and the daemon (standard library only: the CLI imports it).

- The local admin token (`~/.config/sage-ops/token`) goes only to the daemon of this state dir:
  a loopback TCP address is "local" when every listener that could answer there is a socket the
  daemon named in our pidfile holds (its fds, matched against /proc/net/tcp{,6}). Another user's
  process on a loopback port, a stale pidfile, a remote host: none of them gets it.
- A token never crosses a network in clear: plain HTTP carries one to loopback only, unless the
  caller says `--insecure` (`insecure=True`).
- A daemon listens on a non-loopback address without TLS only when told so in as many words.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_V4_LOOPBACK, _V6_LOOPBACK = "127.0.0.1", "::1"


def split_target(target: str) -> tuple[str, int]:
    """"HOST:PORT" or "[V6]:PORT" -> (host, port)."""
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def _ip(host: str) -> tuple[int, bytes] | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return family, socket.inet_pton(family, host)
        except OSError:
            continue
    return None


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 (or ::ffff:127.x) and the loopback names; no DNS lookup."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    ip = _ip(host)
    if ip is None:
        return False
    family, raw = ip
    if family == socket.AF_INET:
        return raw[0] == 127
    return raw == bytes(15) + b"\x01" or (raw[:12] == bytes(10) + b"\xff\xff" and raw[12] == 127)


def plaintext_exposure(host: str | None, tls: bool) -> str | None:
    """Why serving TCP on `host` without TLS would put bearer tokens on a network in clear (None:
    it would not). `daemon start` refuses it; JobManagerServer narrows the host to loopback."""
    if not host or tls or is_loopback(host):
        return None
    return f"TCP on {host} without TLS would carry bearer tokens across the network in clear"


def loopback_for(host: str) -> str:
    """The loopback address of `host`'s family (what a refused wildcard is narrowed to)."""
    return _V6_LOOPBACK if ":" in host else _V4_LOOPBACK


def plaintext_refusal(target: str, tls: bool, insecure: bool) -> str | None:
    """The one-line reason not to send a token to `target` (HOST:PORT) over plain HTTP, or None."""
    if tls or insecure or is_loopback(split_target(target)[0]):
        return None
    return (f"refusing to send a token in clear to {target}: use TLS (https://, with --ca or $SAGE_OPS_CA), "
            "or accept the risk with --insecure (Python: config={'insecure': True})")


# -- is this loopback address our own daemon? ---------------------------------------------------
def _hex_ip(text: str) -> str:
    """/proc/net/tcp{,6}'s address: 32-bit words in host byte order."""
    raw = bytes.fromhex(text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def listeners(port: int, proc_net: Path = Path("/proc/net")) -> list[tuple[str, int]]:
    """(address, socket inode) of every socket listening on `port` in this network namespace."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            rows = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            addr, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                out.append((_hex_ip(addr), int(inode)))
    return out


def _reaching(host: str) -> set[str]:
    """The listening addresses a connection to loopback `host` may land on (it, or a wildcard)."""
    host = host.strip("[]").lower()
    ips = {_V4_LOOPBACK, _V6_LOOPBACK} if host in LOOPBACK_NAMES else {host}
    out = {"0.0.0.0", "::"}  # noqa: S104 - a wildcard listener answers on loopback too
    for ip in ips:
        out |= {ip, f"::ffff:{ip}"}
    return out


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process `pid` holds (empty when we may not look)."""
    fd_dir = f"/proc/{pid}/fd"
    out = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for name in names:
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def local_daemon(target: str, pid: int | None) -> bool:
    """Is HOST:PORT a loopback address where only daemon `pid` (this state dir's) listens?"""
    try:
        host, port = split_target(target)
    except ValueError:
        return False
    if pid is None or not is_loopback(host):
        return False
    held = socket_inodes(pid)  # first: a dead or foreign pid costs no read of /proc/net
    if not held:
        return False
    reaching = _reaching(host)
    found = [inode for addr, inode in listeners(port) if addr in reaching]
    return bool(found) and set(found) <= held

"""Real Unix users for tests of the OS boundary (run as root): made with useradd, removed with
userdel, and requests to a daemon's socket sent from a child process running as one of them."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any


def can_make_users() -> bool:
    return os.geteuid() == 0 and subprocess.run(["which", "useradd"], capture_output=True).returncode == 0


def make_user(prefix: str) -> pwd.struct_passwd:
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    return pwd.getpwnam(name)


def remove_user(user: pwd.struct_passwd) -> None:
    subprocess.run(["pkill", "-KILL", "-u", user.pw_name], capture_output=True)
    subprocess.run(["userdel", "--remove", user.pw_name], capture_output=True)


def request_as(sock_path: Path, uid: int, method: str, path: str, body: Any = None,
               gid: int | None = None) -> tuple[int, Any]:
    """One HTTP request over the Unix socket from a child process running as `uid`: the peer
    credentials the daemon sees are that user's."""
    payload = json.dumps(body).encode() if body is not None else b""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become that user, ask, report through the pipe
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid if gid is None else gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(sock_path))
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json"
                      f"\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            os.write(w, data)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test with it
            os.write(w, f"CHILD-FAILED {type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    if not data.startswith(b"HTTP/"):
        raise AssertionError(f"no HTTP answer as uid {uid}: {data[:300]!r}")
    head, _, body_bytes = data.partition(b"\r\n\r\n")
    text = body_bytes.decode()
    return int(head.split()[1]), json.loads(text.split("\r\n")[1] if b"chunked" in head else text)

"""A node's private Ray temp dir, as `nodes remove`/drain finds it: named in the node's record
(~/.sage-ops/ray-temp-NAME), removed by SSHBackend.stop over a real sshd only while it is what
rayhead.new_temp_dir makes (a 0700 dir of the node user's, no link, in a dir nobody can swap it
in); a planted link, a loose or foreign dir, or a path sage-ops did not make is left alone. The
node's raylet using such a dir, and /tmp/ray untouched: test_nodes.py."""

from __future__ import annotations

import getpass
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd import Sshd

from sage_ops import rayhead
from sage_ops.nodes.base import NodeTarget
from sage_ops.nodes.ssh import SSHBackend

NAME = "tempnode"


@pytest.fixture
def target(sshd: Sshd, tmp_path: Path) -> NodeTarget:
    return NodeTarget("127.0.0.1", user=getpass.getuser(), port=sshd.port, key_file=str(sshd.client_key),
                      known_hosts=str(tmp_path / "known_hosts"), accept_new_host_key=True)


@pytest.fixture
def victim() -> Iterator[Path]:
    """A dir with a file in it that must survive every stop."""
    with tempfile.TemporaryDirectory(prefix="sgo-victim-") as d:
        (Path(d) / "keep").write_text("mine")
        yield Path(d)


def record(sshd: Sshd, temp: Path) -> Path:
    """What `nodes add` leaves on the node: where its Ray temp dir is."""
    path = sshd.home / ".sage-ops" / f"ray-temp-{NAME}"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(str(temp))
    return path


def test_stop_removes_the_nodes_private_temp_dir(sshd: Sshd, target: NodeTarget) -> None:
    temp = rayhead.new_temp_dir()
    (temp / "session_x" / "sockets").mkdir(parents=True)  # as Ray leaves it: 0777 inside
    os.chmod(temp / "session_x", 0o777)
    rec = record(sshd, temp)
    SSHBackend().stop(target, NAME, 5)
    assert not temp.parent.exists()
    assert not rec.exists()


def test_stop_leaves_a_planted_link(sshd: Sshd, target: NodeTarget, victim: Path) -> None:
    link = Path(tempfile.mktemp(prefix=rayhead.TEMP_PREFIX, dir="/tmp"))
    link.symlink_to(victim)
    try:
        record(sshd, link / "r")
        SSHBackend().stop(target, NAME, 5)
        assert (victim / "keep").read_text() == "mine"
    finally:
        link.unlink()


def test_stop_leaves_a_dir_others_may_enter(sshd: Sshd, target: NodeTarget) -> None:
    temp = rayhead.new_temp_dir()
    os.chmod(temp.parent, 0o755)
    try:
        record(sshd, temp)
        SSHBackend().stop(target, NAME, 5)
        assert temp.parent.exists()
    finally:
        temp.parent.rmdir()


def test_stop_leaves_a_path_sage_ops_did_not_make(sshd: Sshd, target: NodeTarget, victim: Path) -> None:
    record(sshd, victim / "r")
    (victim / "r").mkdir()
    SSHBackend().stop(target, NAME, 5)
    assert (victim / "keep").read_text() == "mine"

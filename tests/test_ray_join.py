"""Joining a Ray cluster the daemon did not start (`ray.address: HOST:PORT`) takes its token and
only the cluster expected: pinned on the first join, or named by `ray.cluster_id`.

The rules in milliseconds on files; then real daemons against the session's real Ray head."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon

from sage_ops.server.backend import ray_join

ONE, OTHER = "a1" * 28, "b2" * 28


def test_the_first_join_pins_the_cluster(tmp_path: Path) -> None:
    ray_join.check(tmp_path / "joined.json", "10.0.0.1:6379", ONE, None)
    assert json.loads((tmp_path / "joined.json").read_text()) == {"10.0.0.1:6379": ONE}


def test_the_pinned_cluster_is_joined_again(tmp_path: Path) -> None:
    ray_join.check(tmp_path / "joined.json", "10.0.0.1:6379", ONE, None)
    ray_join.check(tmp_path / "joined.json", "10.0.0.1:6379", ONE, None)  # no error


def test_another_cluster_at_a_pinned_address_is_refused(tmp_path: Path) -> None:
    ray_join.check(tmp_path / "joined.json", "10.0.0.1:6379", ONE, None)
    with pytest.raises(ray_join.Refused, match="not the one this daemon joined before"):
        ray_join.check(tmp_path / "joined.json", "10.0.0.1:6379", OTHER, None)


def test_ray_cluster_id_names_the_cluster_outright(tmp_path: Path) -> None:
    ray_join.check(tmp_path / "joined.json", "10.0.0.1:6379", ONE, None)
    ray_join.check(tmp_path / "joined.json", "10.0.0.1:6379", OTHER, OTHER)  # the operator said so


def test_a_cluster_other_than_ray_cluster_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ray_join.Refused, match="not ray.cluster_id"):
        ray_join.check(tmp_path / "joined.json", "10.0.0.1:6379", ONE, OTHER)


def test_a_join_without_a_token_is_refused() -> None:
    with pytest.raises(ray_join.Refused, match="give its token"):
        ray_join.require_token("10.0.0.1:6379", {"PATH": "/usr/bin"})


# -- real daemons, the session's head at HOST:PORT -----------------------------------------------
def test_a_daemon_pins_the_cluster_it_joins(new_daemon: Callable[..., Daemon]) -> None:
    d = new_daemon()
    d.start()
    pins = json.loads((d.state / "ray" / "joined.json").read_text())
    assert list(pins) == [d.env["SAGE_OPS_RAY__ADDRESS"]]


def test_a_daemon_refuses_a_cluster_other_than_expected(new_daemon: Callable[..., Daemon]) -> None:
    d = new_daemon({"ray": {"cluster_id": OTHER}})
    out = d.run("daemon", "start")
    assert out.returncode != 0 and "not ray.cluster_id" in out.stderr, out.stderr


def test_a_daemon_refuses_to_join_without_a_token(new_daemon: Callable[..., Daemon]) -> None:
    d = new_daemon()
    for var in ray_join.TOKEN_VARS:
        d.env.pop(var, None)
    out = d.run("daemon", "start")
    assert out.returncode != 0 and "give its token" in out.stderr, out.stderr

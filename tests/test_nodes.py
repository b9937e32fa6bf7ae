"""Nodes over real SSH, through the daemon and the CLI: `nodes add USER@HOST` as the README has it
(no --wheel-dir) bootstraps a second Ray node on this machine through a real sshd, with the
daemon's own sage-ops wheel shipped over SFTP and Ray and the rest from the node's package index
(pip's config there); a job asking for the resource only it has runs there, `drain` waits for it
and stops that node's Ray, `remove` forgets it. Refusals (unknown host key, wrong key, no python)
fail the node with the step named. test_ssh.py installs from a wheelhouse (offline) instead."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, wait_until


@pytest.fixture(scope="module")
def cluster(ray_head: dict[str, str], sshd: Any) -> Any:
    d = Daemon(ray_head, {"nodes": {"known_hosts": "KNOWN"}})
    known = d.home / "known_hosts"
    cfg = d.home / "config.yaml"
    cfg.write_text(cfg.read_text().replace("KNOWN", str(known)))
    d.start()
    try:
        yield d
    finally:
        for name in ("tpu1", "gone"):
            d.run("nodes", "remove", name, "--force")
        d.cleanup()


def add(d: Daemon, sshd: Any, *extra: str, key: Path | None = None) -> Any:
    return d.run("nodes", "add", f"root@127.0.0.1:{sshd.port}", "--key", str(key or sshd.client_key),
                 "--venv", "~/.sage-ops/venv-daemon", *extra, timeout=600)  # test_ssh.py has ~/.sage-ops/venv


def nodes(d: Daemon) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in json.loads(d.run("nodes", "--json", check=True).stdout)}


def raylets() -> list[str]:
    """The command lines of the raylets running here."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"raylet"):
            out.append(b" ".join(cmd).decode(errors="replace"))
    return out


def tmp_ray() -> list[str] | None:
    """What Ray's default temp dir holds (None: there is none)."""
    return sorted(os.listdir("/tmp/ray")) if os.path.lexists("/tmp/ray") else None


def test_add_run_drain_remove(cluster: Daemon, sshd: Any) -> None:
    d = cluster
    ray_default = tmp_ray()
    out = add(d, sshd, "--name", "tpu1", "--resources", '{"TPU": 1}', "--num-cpus", "1", "--accept-new-host-key")
    assert out.returncode == 0, out.stderr
    for step in ("connect", "check python", "install", "join ray", "verify"):  # not a TTY: plain lines
        assert f"tpu1: {step}" in out.stderr
    assert "1 of 1 node(s) up" in out.stderr
    # sage-ops went as the daemon's own wheel, built into its cache; the rest from the node's index
    assert "sage-ops shipped, the rest from the node's package index" in out.stderr
    shipped = list((d.state / "cache" / "wheels").glob("sage_ops-*.whl"))
    assert len(shipped) == 1
    assert sshd.installed(".sage-ops/venv-daemon") == [shipped[0].name.split("-")[1]]
    assert f"[127.0.0.1]:{sshd.port}" in (d.home / "known_hosts").read_text()  # recorded
    node = nodes(d)["tpu1"]
    assert node["state"] == "UP" and node["managed"] and node["resources"] == {"TPU": 1.0}
    assert node["cpu_total"] == 1 and node["heartbeat_age_s"] is not None
    # the node's Ray temp dir is private (a fresh 0700 dir, not /tmp/ray), and its raylet uses it
    temp = Path((sshd.home / ".sage-ops" / "ray-temp-tpu1").read_text())
    assert temp.parent.name.startswith("sage-ops-rt-") and temp.parent.stat().st_mode & 0o777 == 0o700
    assert temp.parent.stat().st_uid == os.getuid()  # the node user's (sshd logs in as this user)
    assert any(f"{temp}/session_" in cmd for cmd in raylets()), raylets()
    assert tmp_ray() == ray_default  # nothing new in Ray's default temp dir

    client = d.client()
    job = client.submit_command(["sh", "-c", "echo on $SAGE_OPS_NODE"], resources={"custom_resources": {"TPU": 1}})
    done = client.wait(job, timeout=120)
    assert done.status == "COMPLETED" and done.node == "tpu1"
    assert [e.message for e in client.get_job_logs(job)] == ["on tpu1"]

    again = add(d, sshd, "--name", "tpu1", "--resources", '{"TPU": 1}', "--num-cpus", "1")
    assert again.returncode == 0, again.stderr  # idempotent: checked, left running
    assert nodes(d)["tpu1"]["detail"] == "already up"

    long = client.submit_command(["sleep", "4"], resources={"custom_resources": {"TPU": 1}})
    wait_until(lambda: client.get_job_status(long) == "RUNNING", timeout=60)
    started = d.run("nodes", "drain", "tpu1", "--no-wait", "--json", check=True)
    assert json.loads(started.stdout)["state"] == "DRAINING"
    later = client.submit_command(["true"], resources={"custom_resources": {"TPU": 1}})
    drained = d.run("nodes", "drain", "tpu1", "--json", timeout=180)  # follows the drain under way
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout)["state"] == "DRAINED"
    assert client.get_job_status(long) == "COMPLETED"  # drain waited for it
    assert "wait jobs" in drained.stderr and "stop ray" in drained.stderr
    assert client.get_job_status(later) == "PENDING"  # it waits; the draining node took nothing new
    assert nodes(d)["tpu1"]["cpu_total"] == 0  # its Ray is stopped
    assert not temp.parent.exists()  # and its private temp dir is gone
    client.cancel_job(later)

    removed = d.run("nodes", "remove", "tpu1")
    assert removed.returncode == 0 and "removed tpu1" in removed.stdout
    assert "tpu1" not in nodes(d)
    assert not temp.parent.exists()
    events = [e.action for e in client.audit(action=None)]
    assert {"node.joining", "node.up", "node.draining", "node.drained", "node.removed"} <= set(events)


def test_refusals_name_the_step_and_leave_no_node_up(cluster: Daemon, sshd: Any, tmp_path: Path) -> None:
    d = cluster
    known = d.home / "known_hosts"
    known.write_text("")
    unknown = add(d, sshd, "--name", "gone")
    assert unknown.returncode == 1
    assert "connect: host key" in unknown.stderr and "--accept-new-host-key" in unknown.stderr
    assert known.read_text() == ""  # not recorded without the flag
    gone = nodes(d)["gone"]
    assert gone["state"] == "FAILED" and gone["detail"].startswith("connect:")

    known.write_text(sshd.known_hosts_line())
    wrong = add(d, sshd, "--name", "gone", key=sshd.wrong_key)
    assert wrong.returncode == 1 and "authentication failed" in wrong.stderr

    no_python = add(d, sshd, "--name", "gone", "--python", "python3.99")
    assert no_python.returncode == 1 and "check python:" in no_python.stderr
    assert d.run("nodes", "remove", "gone").returncode == 0  # a failed node is simply forgotten

    changed = known.read_text().split()
    changed[2] = changed[2][:-8] + "AAAAAAAA"  # another key for the same host
    known.write_text(" ".join(changed) + "\n")
    assert "CHANGED" in add(d, sshd, "--name", "gone", "--accept-new-host-key").stderr
    assert d.run("nodes", "remove", "gone").returncode == 0


def test_bad_node_requests_get_one_line_errors(cluster: Daemon) -> None:
    d = cluster
    for args, code, text in [
        (("nodes", "add", "bad host!"), 2, "[USER@]HOST[:PORT]"),
        (("nodes", "add", "a;b"), 1, "bad host"),
        (("nodes", "add", "h", "--resources", "{"), 2, "not JSON"),
        (("nodes", "add", "h", "--resources", '{"CPU": 2}'), 1, "num_cpus"),
        (("nodes", "drain", "nope"), 1, "no such node: nope"),
        (("nodes", "remove", "nope"), 1, "no such node: nope"),
    ]:
        out = d.run(*args)
        assert out.returncode == code, (args, out.stderr)
        assert text in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    head = next(n for n in nodes(d).values() if n["head"])
    refused = d.run("nodes", "drain", head["name"])
    assert refused.returncode == 1 and "not added by sage-ops" in refused.stderr
    d.run("tenant", "create", "ops", check=True)
    member = json.loads(d.run("token", "create", "--tenant", "ops", "--name", "m", "--json",
                              check=True).stdout)["token"]
    denied = d.run("--token", member, "nodes", "add", "127.0.0.1")
    assert denied.returncode == 1 and "not an admin" in denied.stderr

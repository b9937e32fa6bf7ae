"""What a job runs with: a virtualenv of the node (--venv), Ray's pip environment (--pip, from a
wheel made here: no index needed), a container (--image: the podman command line, and its
refusal where podman is missing)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import Daemon

from sage_ops.server.backend import job_runtime


def wheel(folder: Path) -> Path:
    """A tiny pure-Python wheel, made by hand (no build backend, no network)."""
    path = folder / "sgotiny-1.0-py3-none-any.whl"
    files = {"sgotiny/__init__.py": b"WORD = 'from-wheel'\n",
             "sgotiny-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: sgotiny\nVersion: 1.0\n",
             "sgotiny-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                            b"Tag: py3-none-any\n"}
    record = []
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        z.writestr("sgotiny-1.0.dist-info/RECORD", "\n".join([*record, "sgotiny-1.0.dist-info/RECORD,,"]) + "\n")
    return path


def ended(daemon: Daemon, *args: str) -> tuple[str, str | None, list[str]]:
    """Submit, wait; its status, reason and output lines."""
    job = daemon.submit_q("--cpu", "0", *args)
    view = daemon.client().wait(job, timeout=240)
    lines = [e.message for e in daemon.client().get_job_logs(job) if e.stream != "system"]
    return view.status.value, view.reason, lines


def test_a_venv_of_the_node_is_on_the_jobs_path(daemon: Daemon, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    out = ended(daemon, "--venv", str(venv), "--", "sh", "-c", 'echo "$VIRTUAL_ENV $(command -v python)"')
    assert out[2] == [f"{venv} {venv}/bin/python"]


def test_a_venv_missing_on_the_node_is_a_failed_attempt_saying_so(daemon: Daemon) -> None:
    status, reason, _ = ended(daemon, "--venv", "/nonexistent/venv", "--", "true")
    assert (status, "venv /nonexistent/venv does not exist on" in (reason or "")) == ("FAILED", True)


def test_pip_installs_a_wheel_in_rays_environment(daemon: Daemon, tmp_path: Path) -> None:
    out = ended(daemon, "--pip", str(wheel(tmp_path)), "--", "python", "-c",
                "import os, sgotiny; print(sgotiny.WORD, 'VIRTUAL_ENV' in os.environ)")
    assert out[2] == ["from-wheel True"]


def test_a_pip_package_that_does_not_exist_fails_with_pips_reason(daemon: Daemon, tmp_path: Path) -> None:
    status, reason, _ = ended(daemon, "--pip", str(tmp_path / "sgo_no_such-1.0-py3-none-any.whl"), "--", "true")
    assert (status, (reason or "").startswith("environment setup failed: ERROR:")) == ("FAILED", True)


def test_requirements_are_read_as_pip_lines(tmp_path: Path) -> None:
    from sage_ops.cli.shipping import requirements

    (tmp_path / "r.txt").write_text("# pinned\nnumpy<3  # arrays\n\nrequests==2.32.3\n")
    assert requirements(str(tmp_path / "r.txt")) == ["numpy<3", "requests==2.32.3"]


def test_a_container_gets_the_jobs_variables_by_name_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "podman").write_text("#!/bin/sh\n")
    (tmp_path / "podman").chmod(0o755)
    monkeypatch.setattr(job_runtime, "SYSTEM_PATH", str(tmp_path))
    argv = job_runtime.podman(["python3", "x.py"], "alpine:3", "/w", ["/s"], ["TOKEN"], "node1")
    assert argv[1:] == ["run", "--rm", "--network=host", "--workdir", "/w", "--volume", "/w:/w", "--volume",
                        "/s:/s", "--env", "TOKEN", "--", "alpine:3", "python3", "x.py"]


def test_an_image_on_a_node_without_podman_is_refused_saying_so(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.setattr(job_runtime, "SYSTEM_PATH", str(tmp_path))
    with pytest.raises(LookupError, match="podman is not installed on node1"):
        job_runtime.podman(["true"], "alpine:3", "/w", [], [], "node1")

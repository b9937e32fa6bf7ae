"""Shipped working directories: packing (what is left out, the same bytes for the same tree, the
size limit, links) and safe unpacking, in milliseconds; then a few facts on a real daemon."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from conftest import Daemon

from sage_ops.errors import Invalid
from sage_ops.server.backend.shipped import UnsafePackage, unpack
from sage_ops.workdir import pack


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "main.py").write_text("import pkg.mod\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    (root / "data.bin").write_bytes(b"0" * 10)
    (root / "pkg" / "cache.tmp").write_text("x")
    (root / ".gitignore").write_text("*.bin\n")
    (root / "pkg" / ".sage-ops-ignore").write_text("*.tmp\n")
    return root


def test_ignored_files_and_git_are_left_out(tree: Path) -> None:
    assert names(pack(tree).data) == [".gitignore", "main.py", "pkg", "pkg/.sage-ops-ignore", "pkg/mod.py"]


def test_a_negated_pattern_brings_a_file_back(tree: Path) -> None:
    (tree / ".gitignore").write_text("*.bin\n!data.bin\n")
    assert "data.bin" in names(pack(tree).data)


def test_the_same_tree_packs_to_the_same_bytes(tree: Path) -> None:
    first = pack(tree).sha256
    os.utime(tree / "main.py", (1, 1))
    assert pack(tree).sha256 == first


def test_over_the_limit_is_one_line_naming_the_biggest_file(tree: Path) -> None:
    (tree / "big.dat").write_bytes(os.urandom(200_000))
    with pytest.raises(Invalid, match=r"packs to more than .*; biggest files: big.dat \(195KiB\)") as info:
        pack(tree, limit=100_000)
    assert "\n" not in info.value.message


def test_a_link_out_of_the_directory_is_refused(tree: Path) -> None:
    (tree / "out").symlink_to("/etc/passwd")
    with pytest.raises(Invalid, match="link out points outside it"):
        pack(tree)


def test_a_link_inside_is_kept_as_a_link(tree: Path, tmp_path: Path) -> None:
    (tree / "alias.py").symlink_to(tree / "main.py")
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(pack(tree).data, str(dest))
    assert os.readlink(dest / "alias.py") == "main.py"


def test_a_missing_directory_is_one_line() -> None:
    with pytest.raises(Invalid, match="workdir /nonexistent: no such directory"):
        pack("/nonexistent")


def test_unpack_restores_the_tree(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(pack(tree).data, str(dest))
    assert (dest / "pkg" / "mod.py").read_text() == "X = 1\n"


def _tar(member: tarfile.TarInfo, content: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        member.size = len(content)
        tar.addfile(member, io.BytesIO(content) if content else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(("member", "why"), [
    (_member("/etc/cron.d/x"), "unsafe path"),
    (_member("a/../../x"), "unsafe path"),
    (_member("l", tarfile.SYMTYPE, "../../etc"), "link out"),
    (_member("l", tarfile.SYMTYPE, "/etc/passwd"), "link out"),
    (_member("h", tarfile.LNKTYPE, "/etc/passwd"), "not a file"),
    (_member("d", tarfile.CHRTYPE), "not a file"),
])
def test_an_unsafe_package_is_refused_before_anything_is_written(member: tarfile.TarInfo, why: str,
                                                                  tmp_path: Path) -> None:
    with pytest.raises(UnsafePackage, match=why):
        unpack(_tar(member, b"x" if member.isreg() else b""), str(tmp_path))
    assert os.listdir(tmp_path) == []


# -- on a real daemon ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ship")
    (root / "helper.py").write_text("WORD = 'shipped'\n")
    (root / "main.py").write_text("import helper\nopen('out.txt', 'w').write(helper.WORD)\n"
                                  "print(helper.WORD, open('out.txt').read())\n")
    return root


def test_a_shipped_workdir_is_the_jobs_working_directory(daemon: Daemon, shipped_dir: Path) -> None:
    job = daemon.submit_q("--cpu", "0", "--workdir", str(shipped_dir), "--", "python3", "main.py")
    daemon.client().wait(job, timeout=120)
    assert [e.message for e in daemon.client().get_job_logs(job) if e.stream != "system"] == ["shipped shipped"]


def test_the_same_directory_is_uploaded_once(daemon: Daemon, shipped_dir: Path) -> None:
    daemon.run("submit", "--cpu", "0", "--hold", "--workdir", str(shipped_dir), "--", "true", check=True)
    again = daemon.run("submit", "--cpu", "0", "--hold", "--workdir", str(shipped_dir), "--", "true", check=True)
    assert "packed, already on the daemon" in again.stderr


def test_a_too_large_directory_is_exit_2_in_one_line(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(101 * 1024 * 1024))
    out = daemon.run("submit", "--workdir", str(tmp_path), "--", "true")
    assert (out.returncode, out.stderr.count("\n"), "biggest files: big.bin" in out.stderr) == (2, 1, True)


def test_a_spec_naming_a_package_the_daemon_lacks_is_refused(daemon: Daemon) -> None:
    with pytest.raises(Invalid, match="package 000000000000 is not on the daemon"):
        daemon.client().submit_job({"command": ["true"], "package": {"sha256": "0" * 64, "size": 1}})


def test_a_batch_files_working_dir_that_is_here_is_shipped_and_chdir_is_the_nodes(tmp_path: Path) -> None:
    from sage_ops.cli.batchfile import load_batch

    (tmp_path / "src").mkdir()
    (tmp_path / "reqs.txt").write_text("numpy<3\n")
    (tmp_path / "jobs.yaml").write_text("jobs:\n  - {name: a, command: python a.py, working_dir: src, "
                                        "requirements: reqs.txt}\n  - {name: b, command: [sh], chdir: /data}\n")
    a, b = load_batch(tmp_path / "jobs.yaml")
    assert ((a["workdir"], a["pip"]), b.working_dir) == ((str(tmp_path / "src"), ["numpy<3"]), "/data")


async def test_the_async_client_ships_a_workdir_too(daemon: Daemon, shipped_dir: Path) -> None:
    from sage_ops import AsyncJobManagerClient

    async with AsyncJobManagerClient(f"unix://{daemon.socket}") as client:
        job = await client.submit_command(["python3", "main.py"], workdir=shipped_dir, resources={"cpu": 0})
        await client.wait(job, timeout=120)
        assert [e.message for e in await client.get_job_logs(job) if e.stream != "system"] == ["shipped shipped"]

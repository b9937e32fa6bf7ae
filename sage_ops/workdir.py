"""A job's working directory, shipped with it: packed here (where the CLI or the client runs) into
one deterministic tar.gz, named by its sha256, uploaded once (`PUT /v1/packages/SHA`) and
unpacked as the job's working directory on the node that runs it (server/backend/shipped.py).

What is left out, as git and Ray's `working_dir` leave it out: `.git/`, and whatever a
`.gitignore` or `.sage-ops-ignore` (gitignore syntax, in any folder, for the paths below it)
excludes. A link is kept as a link only if it stays inside the directory; one that leaves it is
refused (its target would not exist on the node, or would be another machine's file). The same
tree gives the same bytes (sorted names, zeroed times and owners), so it is stored and sent once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pathspec

from .errors import Invalid, NotFound
from .plaintext import binary_size

MAX_PACKAGE_BYTES = 100 * 1024 * 1024  # packed, as Ray's working_dir limit
IGNORE_FILES = (".gitignore", ".sage-ops-ignore")
ALWAYS_SKIPPED = (".git",)


@dataclass(frozen=True)
class Packed:
    """A packed directory: its bytes, and the reference a job spec carries (`package`)."""

    root: Path
    data: bytes
    sha256: str
    files: int

    @property
    def size(self) -> int:
        return len(self.data)

    def ref(self) -> dict[str, object]:
        return {"sha256": self.sha256, "size": self.size}


class _Ignored:
    """The ignore files met so far on the walk down: each applies to the paths below its folder."""

    def __init__(self) -> None:
        self.specs: list[tuple[str, pathspec.PathSpec]] = []

    def read(self, folder: Path, rel: str) -> None:
        for name in IGNORE_FILES:
            path = folder / name
            if path.is_file():
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                self.specs.append((rel, pathspec.PathSpec.from_lines("gitignore", lines)))

    def __call__(self, rel: str, is_dir: bool) -> bool:
        ignored = False
        for base, spec in self.specs:
            if base and not rel.startswith(base + "/"):
                continue
            below = rel[len(base) + 1:] if base else rel
            # the last matching pattern decides, a negation (!) included, as in git
            result = spec.check_file(below + ("/" if is_dir else ""))
            if result.include is not None:
                ignored = result.include
        return ignored


def _entries(root: Path) -> list[tuple[str, os.stat_result]]:
    """(path relative to root, lstat) of every entry that is shipped, sorted; folders first."""
    ignored = _Ignored()
    out: list[tuple[str, os.stat_result]] = []

    def walk(folder: Path, rel: str) -> None:
        ignored.read(folder, rel)
        for name in sorted(os.listdir(folder)):
            path, sub = folder / name, f"{rel}/{name}" if rel else name
            st = path.lstat()
            is_dir = stat.S_ISDIR(st.st_mode)
            if (is_dir and name in ALWAYS_SKIPPED) or ignored(sub, is_dir):
                continue
            if stat.S_ISLNK(st.st_mode):
                _inside(root, path, sub)
            elif not (is_dir or stat.S_ISREG(st.st_mode)):
                continue  # a socket, FIFO or device: nothing to ship
            out.append((sub, st))
            if is_dir:
                depth = len(ignored.specs)
                walk(path, sub)
                del ignored.specs[depth:]  # a folder's ignore files end with it

    walk(root, "")
    return out


def _inside(root: Path, link: Path, rel: str) -> str:
    """The link's target, relative, if it stays inside root; else Invalid."""
    target = Path(os.path.realpath(link))
    if target != root and root not in target.parents:
        raise Invalid(f"workdir {root}: link {rel} points outside it (to {os.readlink(link)}); "
                      "copy what it points to into the directory, or ignore it in .sage-ops-ignore")
    return os.path.relpath(target, os.path.realpath(link.parent))


class _Capped(io.BytesIO):
    """The packed bytes, up to the limit: past it the packing stops at once (a 10 GiB tree is
    not compressed to learn that it is too large)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.limit:
            raise OverflowError
        return super().write(data)


def pack(directory: str | os.PathLike[str], limit: int = MAX_PACKAGE_BYTES) -> Packed:
    """`directory` as one deterministic tar.gz, or Invalid (one line: no such directory, a link
    out of it, over `limit` bytes packed with its biggest files named)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise Invalid(f"workdir {directory}: {'not a directory' if root.exists() else 'no such directory'}")
    root = root.resolve()
    entries = _entries(root)
    out = _Capped(limit)
    try:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, st in entries:
                _add(tar, root, rel, st)
    except OverflowError:
        raise Invalid(_too_large(root, entries, limit)) from None
    data = out.getvalue()
    return Packed(root, data, hashlib.sha256(data).hexdigest(), sum(1 for _, st in entries
                                                                   if stat.S_ISREG(st.st_mode)))


def _add(tar: tarfile.TarFile, root: Path, rel: str, st: os.stat_result) -> None:
    info = tarfile.TarInfo(rel)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    path = root / rel
    if stat.S_ISDIR(st.st_mode):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, _inside(root, path, rel)
        tar.addfile(info)
    else:
        info.size, info.mode = st.st_size, 0o755 if st.st_mode & 0o111 else 0o644
        with open(path, "rb") as f:
            tar.addfile(info, f)


def _too_large(root: Path, entries: list[tuple[str, os.stat_result]], limit: int) -> str:
    files = sorted(((st.st_size, rel) for rel, st in entries if stat.S_ISREG(st.st_mode)), reverse=True)[:3]
    biggest = ", ".join(f"{rel} ({binary_size(size)})" for size, rel in files)
    return (f"workdir {root}: packs to more than {binary_size(limit)}, the limit; biggest files: {biggest}; "
            "leave them out with .sage-ops-ignore (gitignore syntax), or keep data on shared storage")


def package_key(sha256: str, tenant: str | None) -> str:
    """Where the daemon's blob store keeps a package: under its tenant's own prefix, so no tenant
    can learn (by asking for a hash) what another uploaded, nor run another's package."""
    return f"packages/{tenant or '_'}/{sha256}.tar.gz"


def ship(bodies: list[dict[str, Any]], base: Path | None = None) -> tuple[list[dict[str, Any]], list[Packed]]:
    """Job specs (the API's JSON) whose `workdir` (a local directory, relative to `base` or the
    current directory) is packed: each names its `package` instead. A directory is packed once."""
    by_dir: dict[Path, Packed] = {}
    out = []
    for body in bodies:
        given = body.get("workdir")
        if given is None:
            out.append(body)
            continue
        path = (base or Path.cwd()) / Path(os.fspath(given)).expanduser()
        key = path.resolve()
        if key not in by_dir:
            by_dir[key] = pack(path)
        rest = {k: v for k, v in body.items() if k != "workdir"}
        out.append({**rest, "package": by_dir[key].ref()})
    return out, list({p.sha256: p for p in by_dir.values()}.values())


def probe_path(packed: Packed) -> str:
    """GET: 200 if the daemon has it, 404 if it must be uploaded (PUT, the bytes as the body)."""
    return f"/v1/packages/{packed.sha256}"


UPLOAD_HEADERS = {"Content-Type": "application/gzip"}
UPLOAD_TIMEOUT = 600.0  # 100 MiB over a slow link


def upload(call: Callable[..., Any], packs: list[Packed]) -> list[Packed]:
    """Upload what the daemon lacks through `call` (WireClient.call); those uploaded."""
    sent = []
    for packed in packs:
        try:
            call("GET", probe_path(packed))
        except NotFound:
            call("PUT", probe_path(packed), content=packed.data, headers=UPLOAD_HEADERS, timeout=UPLOAD_TIMEOUT)
            sent.append(packed)
    return sent

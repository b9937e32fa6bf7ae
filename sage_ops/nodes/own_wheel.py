"""The daemon's own sage-ops as a wheel, shipped to every node it adds: sage-ops is on no package
index, so a node cannot install it by name.

Built here with no build backend, no pip and no network, the same way whatever the install: the
files of the `sage_ops` package this process imports (a checkout for an editable install,
site-packages for `pip install .`, pipx or `uv tool`: in every case the code the daemon itself
runs) and the metadata of its installed distribution (the dependencies this environment was
resolved from, the entry points). `pip wheel` of a checkout would need setuptools here (absent
from a Python 3.12+ venv), write build files into the checkout and does not apply to a
non-editable install at all; a wheel is a zip with three metadata files, written directly.

Cached by version and a hash of those files: the same source gives the same wheel (reused), an
edited one a new wheel. The hash is also the wheel's local version label (`0.1.0+src1a2b3c4d5e6f`),
so a node that has another build of the same version is reinstalled, not left behind."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sage_ops import paths
from sage_ops.errors import SageOpsError

KEEP = 4  # the newest wheels kept in the cache; older builds are removed
FORMAT = b"sage-ops own wheel 1"  # part of the hash: a change of how wheels are made makes new ones
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip times: the same files give the same bytes
_VERSION_LINE = re.compile(r"^Version: .*\n", re.M)
_lock = threading.Lock()  # `nodes add --parallel`: one build, the other joins reuse it


@dataclass(frozen=True)
class OwnWheel:
    path: Path
    version: str  # what the node's `importlib.metadata.version("sage-ops")` will say
    built: bool  # False: it was in the cache


def package_dir() -> Path:
    import sage_ops

    return Path(sage_ops.__file__).resolve().parent


def package_files(package: Path) -> list[tuple[str, Path]]:
    """(name in the wheel, file) for every file of the package but byte code, dot files and
    editor backups (a checkout's stray files are harmless; its caches are not shipped)."""
    found = []
    for top, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and not name.endswith((".pyc", ".pyo", "~")):
                path = Path(top, name)
                found.append((f"sage_ops/{path.relative_to(package).as_posix()}", path))
    return found


def _installed_metadata() -> tuple[str, str]:
    """METADATA and entry_points.txt of sage-ops as importlib.metadata finds it here."""
    try:
        dist = metadata.distribution("sage-ops")
    except metadata.PackageNotFoundError:
        raise SageOpsError("sage-ops is not installed in this environment (no metadata to build its wheel "
                           "from): install it, e.g. `pip install -e .` in the checkout") from None
    meta = dist.read_text("METADATA") or dist.read_text("PKG-INFO")  # a dist-info, or a checkout's egg-info
    if not meta or not _VERSION_LINE.search(meta):
        raise SageOpsError(f"the installed sage-ops metadata is unreadable ({dist.locate_file('')})")
    return meta, dist.read_text("entry_points.txt") or ""


def _b64_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _zip(dest: Path, contents: list[tuple[str, bytes]], info: str) -> None:
    """Write the wheel: the files, then RECORD (each file's hash and size), reproducibly."""
    record = [f"{name},sha256={_b64_digest(data)},{len(data)}" for name, data in contents]
    record.append(f"{info}/RECORD,,")
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in [*contents, (f"{info}/RECORD", ("\n".join(record) + "\n").encode())]:
            entry = zipfile.ZipInfo(name, _EPOCH)
            entry.external_attr = 0o100644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(entry, data)


def own_wheel(cache: Path | None = None, package: Path | None = None) -> OwnWheel:
    """The wheel of this sage-ops (of `package`, a copy of the `sage_ops` directory, in tests),
    from `cache` (default: the state dir's cache/wheels) when the same source was built before,
    else built into it."""
    from sage_ops import __version__

    cache = cache or paths.state_dir() / "cache" / "wheels"
    package = package or package_dir()
    meta, entry_points = _installed_metadata()
    try:
        files = [(name, path.read_bytes()) for name, path in package_files(package)]
    except OSError as e:
        raise SageOpsError(f"cannot read the sage-ops package at {package}: {e}") from None
    base = _VERSION_LINE.sub("", meta, count=1)  # an installed build of ours keeps its hash
    digest = hashlib.sha256(FORMAT + b"\0" + __version__.encode())
    for name, data in files:
        digest.update(b"\0%s\0%d\0" % (name.encode(), len(data)) + data)
    digest.update(b"\0" + base.encode() + b"\0" + entry_points.encode())
    version = f"{__version__}{'.' if '+' in __version__ else '+'}src{digest.hexdigest()[:12]}"
    info = f"sage_ops-{version}.dist-info"
    target = cache / f"sage_ops-{version}-py3-none-any.whl"
    with _lock:
        if target.is_file():
            os.utime(target)  # recently used: kept by the pruning below
            return OwnWheel(target, version, built=False)
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        contents = [*files, (f"{info}/METADATA", _VERSION_LINE.sub(f"Version: {version}\n", meta, count=1).encode()),
                    (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: sage-ops\nRoot-Is-Purelib: true\n"
                                      b"Tag: py3-none-any\n")]
        if entry_points:
            contents.append((f"{info}/entry_points.txt", entry_points.encode()))
        contents.append((f"{info}/top_level.txt", b"sage_ops\n"))
        fd, tmp = tempfile.mkstemp(prefix=".sage_ops-", suffix=".part", dir=cache)
        os.close(fd)
        try:
            _zip(Path(tmp), contents, info)
            os.replace(tmp, target)  # whole or not at all: a reader never sees half a wheel
        finally:
            Path(tmp).unlink(missing_ok=True)
        old = sorted(cache.glob("sage_ops-*.whl"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]
        for stale in old:
            if stale != target:
                stale.unlink(missing_ok=True)
        return OwnWheel(target, version, built=True)

"""A shipped working directory (sage_ops/workdir.py packs it) unpacked on the node, safely: the
package comes from whoever submitted the job, and the runner unpacking it may be root.

Refused whole, before anything is written: an absolute name, a `..` step, a link whose target
leaves the directory, a hard link, a device or FIFO, and more than MAX_UNPACKED bytes (a small
gzip can hold a huge tree). tarfile's `data` filter checks the same again as it extracts.

Imported on Ray workers: standard library only.
"""

from __future__ import annotations

import io
import posixpath
import tarfile

MAX_UNPACKED = 4 * 1024 * 1024 * 1024  # what one package may unpack to


class UnsafePackage(Exception):
    """The package cannot be unpacked here: one line that says why."""


def _check(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\0" in name:
        raise UnsafePackage(f"unsafe path in package: {name[:200]}")
    if member.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise UnsafePackage(f"link out of the package: {name[:200]} -> {member.linkname[:200]}")
    elif not (member.isreg() or member.isdir()):
        raise UnsafePackage(f"not a file, folder or link in package: {name[:200]}")


def unpack(data: bytes, dest: str) -> int:
    """Unpack `data` (a tar.gz) into the existing directory `dest`; the number of files."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            total = 0
            for member in members:
                _check(member)
                total += member.size
            if total > MAX_UNPACKED:
                raise UnsafePackage(f"package unpacks to {total} bytes, over {MAX_UNPACKED}")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise UnsafePackage(f"cannot unpack the working directory: {exc}") from None
    return sum(1 for m in members if m.isreg())


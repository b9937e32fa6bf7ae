"""Where jobs' files live beyond this machine: `storage.url`, any fsspec URL (file://, s3://,
hdfs://, gs://, ...), as one flat space of keys ("logs/ab/JOB/000…0", "packages/SHA.tar.gz").

Every daemon of a database reads and writes the same store, so a standby that takes over serves
what the old leader wrote without a shared filesystem; the local disk (storage.path) is a cache.
Credentials never come from the URL (it is shown in health output and logs): they come from the
backend's own chain (for S3: AWS_* in the daemon's environment, ~/.aws/credentials, an instance
role), and `storage.options` passes the rest (endpoint_url, region, ...).

Calls block: the daemon makes them in worker threads.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import fsspec

from ...errors import SageOpsError
from ...storage_url import NEEDS, check_url

PROBE = ".sage-ops-probe"
EXTRAS = ("s3", "hdfs")  # schemes with an extra of sage-ops's own (pyproject.toml)


class StorageError(SageOpsError):
    """storage.url cannot be used: one line that says why and what to do."""

    status, code = 503, "storage_unavailable"


class BlobStore:
    """Keys to bytes in one fsspec location."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = check_url(url)
        self.scheme = urlsplit(url).scheme or "file"
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **dict(options or {}))
        except ImportError:
            package = NEEDS.get(self.scheme, "its fsspec backend")
            how = f"pip install 'sage-ops[{self.scheme}]'" if self.scheme in EXTRAS else f"pip install {package}"
            raise StorageError(f"storage.url {url}: {self.scheme}:// needs {package} ({how})") from None
        except (TypeError, ValueError) as exc:
            raise StorageError(f"storage.url {url}: {_line(exc)}") from None
        self.root = root.rstrip("/")
        self.local = self.scheme == "file"

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad storage key {key!r}")
        return f"{self.root}/{key}"

    def check(self) -> None:
        """Write, read and delete a small object: a store that cannot be used stops the daemon at
        start with one line (no bucket, no credentials, no permission), not at the first job."""
        try:
            if self.local:
                os.makedirs(self.root, mode=0o700, exist_ok=True)
            self.put(PROBE, b"ok")
            if self.get(PROBE) != b"ok":
                raise StorageError(f"storage.url {self.url}: what was written is not what is read")
            self.delete([PROBE])
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - each backend raises its own (botocore, OSError, ...)
            raise StorageError(f"storage.url {self.url}: {_line(exc)}") from None

    def put(self, key: str, data: bytes) -> None:
        """Whole or not at all: a reader never sees half an object (a local file is renamed in)."""
        path = self._path(key)
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        folder = os.path.dirname(path)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{uuid.uuid4().hex[:8]}")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Many objects at once: a remote store sends them concurrently (one round trip each,
        but not one after another)."""
        if self.local or len(items) == 1:
            for key, data in items.items():
                self.put(key, data)
        elif items:
            self.fs.pipe({self._path(k): v for k, v in items.items()})

    def get(self, key: str) -> bytes:
        """FileNotFoundError when there is no such key."""
        return bytes(self.fs.cat_file(self._path(key)))

    def _uncached(self, path: str) -> None:
        """Forget what the backend remembers of `path`'s listing: another daemon writes the same
        store (s3fs would otherwise list a prefix as it first saw it, for ever)."""
        if not self.local and hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache(path)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        self._uncached(path)
        return bool(self.fs.exists(path))

    def keys(self, prefix: str) -> list[str]:
        """The objects under `prefix` (a folder: "logs/ab/JOB"), sorted, as they are now."""
        base = self._path(prefix.rstrip("/"))
        self._uncached(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        root = self.root.lstrip("/")
        keys = [p.lstrip("/")[len(root) + 1:] for p, info in found.items() if info.get("type") == "file"]
        return sorted(k for k in keys if k and k != prefix.rstrip("/") and not k.rsplit("/", 1)[-1].startswith("."))

    def delete(self, keys: Iterable[str]) -> None:
        """Missing keys are no error: a delete repeated after a crash finishes the job."""
        paths = [self._path(k) for k in keys]
        if not paths:
            return
        if self.local:
            for path in paths:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            return
        try:
            self.fs.rm(paths)
        except FileNotFoundError:
            pass
        if hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache()


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__

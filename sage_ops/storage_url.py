"""What storage.url may be: checked where the config is read, before any backend is imported."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import fsspec

# the package each scheme's fsspec backend comes in (a missing one is named in the error)
NEEDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "az": "adlfs", "hdfs": "pyarrow"}


def check_url(url: str) -> str:
    """`url` as storage.url takes it, or ValueError saying why not (a config error, exit 2)."""
    parts = urlsplit(url)
    scheme = parts.scheme or "file"
    if parts.password or (parts.username and scheme != "file"):
        raise ValueError("no credentials in storage.url (it is shown in health output and logs): for S3 set "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the daemon, or ~/.aws/credentials")
    if scheme not in fsspec.available_protocols():
        raise ValueError(f"unknown storage scheme {scheme!r}: file://, s3://, hdfs:// or another fsspec protocol")
    if scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path.startswith("/")):
        raise ValueError("a file:// URL takes an absolute path: file:///srv/sage-ops")
    if scheme != "file" and not parts.netloc:
        raise ValueError(f"{scheme}:// needs a bucket or host: {scheme}://BUCKET/PREFIX")
    return url


def private_paths(url: str | None) -> list[Path]:
    """What a job of the daemon's own user must not see for the store's sake: a file:// store's
    folder, and the files the backends read credentials from (AWS's, gcloud's, Azure's)."""
    home = Path.home()
    found = [home / ".aws", home / ".config" / "gcloud", home / ".azure"]
    found += [Path(os.environ[v]) for v in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
                                              "GOOGLE_APPLICATION_CREDENTIALS") if os.environ.get(v)]
    if url and urlsplit(url).scheme in ("", "file"):
        found.append(Path(urlsplit(url).path))
    return [p for p in found if p.exists()]

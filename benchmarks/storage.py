"""What storage.url costs: the daemon's log store (LogStore) over no shared store (the anchor:
storage.path alone, as before), a file:// store, and a real S3 API (moto's server on loopback).

    python benchmarks/storage.py                       # 2,000 jobs of 20 lines, one 32 MiB log
    python benchmarks/storage.py --jobs 10000 --big-mib 100

Prints, per store: lines appended per second with uploads running (as the daemon appends a poll's
blocks), the time a flush of every job's new lines takes, and the time a daemon that never wrote a
log needs to serve it (its first read: blocks fetched from the store) next to a local read. Moto
is an S3 API in Python, much slower than S3 or MinIO: its figures bound the cost from above.
Figures are printed, never asserted; the moto server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sage_ops.server.storage.blobs import BlobStore  # noqa: E402
from sage_ops.server.storage.job_output import encode_lines  # noqa: E402
from sage_ops.server.storage.logs import LogStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_ids(n: int) -> list[str]:
    return [f"{i:012x}" for i in range(n)]


def run(name: str, remote: BlobStore | None, tmp: Path, jobs: int, lines: int, big_mib: int) -> dict[str, float]:
    writer = LogStore(tmp / f"{name}-a", remote)
    ids = job_ids(jobs)
    block = [(time.time(), "stdout", f"line {i} " + "x" * 60, 1) for i in range(lines)]
    data = encode_lines(block)
    began = time.perf_counter()
    for j in ids:
        writer.fresh(j)  # as dispatch says of a first attempt
    for start in range(0, jobs, 200):  # a poll's worth of blocks at a time, as reconcile hands them
        asyncio.run(writer.append_blocks([(j, 1, data) for j in ids[start:start + 200]]))
    appended = time.perf_counter() - began
    began = time.perf_counter()
    writer.flush()
    flushed = time.perf_counter() - began
    big = "BIG000000000"
    chunk = encode_lines([(time.time(), "stdout", "y" * 1000, 1)] * 1024)  # ~1 MiB
    for _ in range(big_mib):
        writer.append_bytes(big, chunk)
    writer.flush()
    began = time.perf_counter()
    local = sum(len(b) for b in writer.blocks(big))
    read_local = time.perf_counter() - began
    reader = LogStore(tmp / f"{name}-b", remote)
    began = time.perf_counter()
    reader.sync(big)
    cold = sum(len(b) for b in reader.blocks(big))
    read_cold = time.perf_counter() - began
    assert cold == local or remote is None
    return {"lines/s": jobs * lines / appended, "flush s": flushed, "local read s": read_local,
            "cold read s": read_cold if remote is not None else float("nan"), "MiB": local / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--lines", type=int, default=20)
    ap.add_argument("--big-mib", type=int, default=32)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sgo-storage-", dir="/tmp"))
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        import fsspec

        endpoint = {"endpoint_url": f"http://127.0.0.1:{port}"}
        fsspec.filesystem("s3", **endpoint).mkdir("bench")
        stores: list[tuple[str, BlobStore | None]] = [
            ("none (anchor)", None), ("file://", BlobStore(f"file://{tmp}/blobs")),
            ("s3:// (moto)", BlobStore("s3://bench/sage-ops", endpoint))]
        print(f"{args.jobs} jobs x {args.lines} lines, one log of {args.big_mib} MiB")
        print(f"{'store':<16}{'lines/s':>12}{'flush all s':>13}{'local read s':>14}{'cold read s':>13}")
        for name, remote in stores:
            r = run(name.split()[0].strip(":/"), remote, tmp, args.jobs, args.lines, args.big_mib)
            print(f"{name:<16}{r['lines/s']:>12,.0f}{r['flush s']:>13.2f}{r['local read s']:>14.3f}"
                  f"{r['cold read s']:>13.3f}")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

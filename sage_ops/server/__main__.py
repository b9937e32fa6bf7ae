"""`python -m sage_ops.server`: run the daemon in the foreground (what `daemon start` spawns)."""

from __future__ import annotations

import argparse
import gc
import os
import sys

from ..errors import SageOpsError


def main(argv: list[str] | None = None) -> int:
    # Ray binds loopback only with this set, and reads it when first imported.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    p = argparse.ArgumentParser(prog="sage-ops-daemon")
    p.add_argument("--config")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--ray-address")
    p.add_argument("--socket")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--insecure-plaintext", action="store_true", help="serve a non-loopback host without TLS")
    p.add_argument("--log-stderr", action="store_true", help="also log to stderr (systemd's journal)")
    a = p.parse_args(argv)
    try:
        from .daemon.daemon import JobManagerServer

        tune_gc()
        tune_malloc()
        JobManagerServer(host=a.host, port=a.port, ray_address=a.ray_address, config=a.config,
                         socket_path=a.socket, **{"security.tls_cert": a.tls_cert,
                                                     "security.tls_key": a.tls_key,
                                                     "security.insecure_plaintext": a.insecure_plaintext or None,
                                                     "logging.stderr": True if a.log_stderr else None}).start()
    except SageOpsError as exc:
        print(f"sage-ops daemon: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def tune_gc() -> None:
    """The daemon keeps every queued job in memory; with the default thresholds a 50,000-job batch
    set off full collections that walk all of them again and again (measured: more than half of a
    batch's validation time). Collect young objects 100x less often, and never rescan what the
    imports made (gc.freeze)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters
MMAP_THRESHOLD = 256 * 1024
ARENAS = 2


def tune_malloc() -> None:
    """The daemon handles log blocks of up to 4 MiB; glibc's dynamic threshold then serves such
    buffers from its heap, where freed ones are not returned (measured: +70-100 MB of RSS after
    one 512 MiB log, kept). A fixed threshold keeps big buffers in their own mappings, returned on
    free; two arenas instead of one per thread that allocated. glibc only (elsewhere a no-op)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(M_ARENA_MAX, ARENAS)


if __name__ == "__main__":
    sys.exit(main())

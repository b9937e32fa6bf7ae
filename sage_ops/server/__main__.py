"""`python -m sage_ops.server`: run the daemon in the foreground (what `daemon start` spawns)."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import SageOpsError
from .allocator import tune_gc, tune_malloc
from .gil import tune_switching


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
        tune_switching()
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


if __name__ == "__main__":
    sys.exit(main())

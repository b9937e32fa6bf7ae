"""Adding nodes over SSH: one node, then N at once, through the daemon and the CLI, installing
offline from a wheelhouse (or, with --index, from the nodes' package index as `nodes add` does
without --wheel-dir) — each "machine" a real sshd on loopback with a home of its own (so a fresh
venv each; pip's config and cache are this user's), all joining this machine's private Ray head
as extra raylets. sage-ops itself is always the daemon's own wheel, shipped over SFTP.

    python benchmarks/nodes.py                       # 1 node, then 8 in parallel
    python benchmarks/nodes.py --parallel 4 --wheel-dir /tmp/wheels
    python benchmarks/nodes.py --parallel 2 --index  # no wheelhouse: the index, as a user's first add

Prints the wall time of `nodes add` for one node (fresh venv), of adding it again (idempotent
check), and of `nodes add --from hosts.txt --parallel N`, plus each node's own join time. Needs
openssh-server (/usr/sbin/sshd). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import remove_nodes  # noqa: E402
from sshd import Sshd  # noqa: E402
from submit_throughput import Bench  # noqa: E402

from sage_ops.nodes.wheels import build_wheelhouse  # noqa: E402


def timed(bench: Bench, *args: str) -> tuple[float, str]:
    """Wall time of a CLI call; a failed add is reported with the rest, not fatal."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sage_ops", *args], env=bench.env, capture_output=True, text=True,
                         timeout=3600)
    if out.returncode != 0:
        print(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
    return time.perf_counter() - t, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--wheel-dir", type=Path, help="an existing wheelhouse (default: build one, ~20 s)")
    ap.add_argument("--index", action="store_true", help="no --wheel-dir: Ray and the rest from the package index")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sgo-bench-nodes-", dir="/tmp"))
    wheels = args.wheel_dir
    if wheels is None and not args.index:
        t = time.perf_counter()
        wheels = home / "wheels"
        build_wheelhouse(wheels, cache=home / "own-wheel")
        print(f"wheelhouse: {len(list(wheels.glob('*.whl')))} wheels in {time.perf_counter() - t:.1f} s")
    source = "offline wheels" if wheels else "the package index"
    servers = [Sshd() for _ in range(args.parallel + 1)]
    key = servers[0].client_key
    for s in servers[1:]:  # one key for every "machine", as an operator's would be
        (s.dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    bench = Bench(home)
    bench.env["SAGE_OPS_NODES__KNOWN_HOSTS"] = str(home / "known_hosts")
    names: list[str] = []
    try:
        bench.start()
        common = ["--key", str(key), "--accept-new-host-key", "--num-cpus", "1"]
        common += ["--wheel-dir", str(wheels)] if wheels else []
        one, _ = timed(bench, "nodes", "add", f"root@127.0.0.1:{servers[0].port}", "--name", "n0", *common)
        names.append("n0")
        again, _ = timed(bench, "nodes", "add", f"root@127.0.0.1:{servers[0].port}", "--name", "n0", *common)
        hosts = home / "hosts.txt"
        hosts.write_text("".join(f"root@127.0.0.1:{s.port} n{i}\n" for i, s in enumerate(servers[1:], 1)))
        many, _ = timed(bench, "nodes", "add", "--from", str(hosts), "--parallel", str(args.parallel), *common)
        names += [f"n{i}" for i in range(1, args.parallel + 1)]
        views = {v["name"]: v for v in json.loads(bench.cli("nodes", "--json"))}
        up = [n for n in names if views.get(n, {}).get("state") == "UP"]
        print(f"add 1 node (fresh venv, {source}): {one:.1f} s")
        print(f"add it again (idempotent check): {again:.1f} s")
        print(f"add {args.parallel} nodes, --parallel {args.parallel}: {many:.1f} s "
              f"({len(up) - 1} of {args.parallel} up; {many / args.parallel:.1f} s per node)")
        for n in names[1:]:
            print(f"  {n}: {views.get(n, {}).get('state')} - {views.get(n, {}).get('detail')}")
    finally:
        remove_nodes(bench.cli, names)
        bench.stop()
        for s in servers:
            s.cleanup()


if __name__ == "__main__":
    main()

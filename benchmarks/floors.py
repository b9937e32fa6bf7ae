"""What bounds the figures that miss their goals, measured on the same machine in the same run:
the parts a job's path is made of, each alone, with nothing of sage-ops around it.

- submit->RUNNING on an idle cluster is a durable commit, two Ray actor calls (daemon ->
  dispatcher -> executor) and a fork+exec, each after a quiet moment (the benchmark submits one
  job, waits for it, then submits the next): `ray_call_quiet_p50_ms` is one actor call's arrival
  after 10 ms of quiet (`ray_call_busy_p50_ms`: back to back), `commit_quiet_p50_ms` one
  one-row SQLite commit (WAL, synchronous=FULL, on the daemon's file system), `fork_quiet_p50_ms`
  one `true` started from a small process, and `fork_in_cgroups_quiet_p50_ms` the same `true` born
  in fresh cpu and freezer cgroups as a job is on cgroup v1 (as root). `two_hops_floor_ms` adds
  them: the p50 with no sage-ops code at all.
- one batch: `store_floor_per_s` is the rate at which the store alone takes 50,000 jobs (their
  rows and their audit row each, made ready before the clock starts, one transaction), the bound on
  any batch rate that keeps a row per job.

    python -m benchmarks floors
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from anchors import on_head
from common import Bench, ms

QUIET = 0.01  # seconds between two samples, as between the idle benchmark's jobs
SAMPLES = 200

RAY_CALLS = r"""
import asyncio
samples, quiet = int(sys.argv[3]), float(sys.argv[4])

@ray.remote(num_cpus=0)
class Echo:
    async def stamp(self, payload):
        return time.time()

async def arrivals(actor, pause):
    out = []
    for _ in range(samples):
        await asyncio.sleep(pause)
        t0 = time.time()
        out.append(await actor.stamp.remote({"id": "0" * 12, "spec": {"command": ["true"]}}) - t0)
    return out

async def main():
    actor = Echo.remote()
    await arrivals(actor, 0)  # its worker up and warm
    print(json.dumps({"quiet": await arrivals(actor, quiet), "busy": await arrivals(actor, 0)}))
    ray.kill(actor)

asyncio.run(main())
"""


def ray_calls(address: str, state: Path, samples: int = SAMPLES, quiet: float = QUIET) -> dict[str, list[float]]:
    """Seconds from one actor call to its arrival in the actor, after `quiet` and back to back,
    from a driver of its own on the daemon's head."""
    return on_head(RAY_CALLS, address, state, str(samples), str(quiet), what="Ray calls") or {"quiet": [], "busy": []}


def commits(directory: Path, samples: int = SAMPLES, quiet: float = QUIET) -> list[float]:
    """Seconds per one-row commit, WAL and synchronous=FULL (what the daemon's SQLite does)."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        db = sqlite3.connect(os.path.join(tmp, "floor.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        out = []
        for i in range(samples):
            time.sleep(quiet)
            t0 = time.perf_counter()
            db.execute("BEGIN")
            db.execute("INSERT INTO t (v) VALUES (?)", [str(i)])
            db.execute("COMMIT")
            out.append(time.perf_counter() - t0)
        db.close()
    return out


CGROUP_V1 = "/sys/fs/cgroup"
JOB_CGROUPS = ("cpu", "freezer")  # where a job with a CPU request is born on cgroup v1: its limit, its tracker


def _move(dirs: Iterable[str]) -> None:
    for path in dirs:
        with open(os.path.join(path, "tasks"), "w", encoding="ascii") as f:
            f.write("0")  # this thread, as the executor moves itself


@contextlib.contextmanager
def _standing_in(cgroups: dict[str, str]) -> Iterator[None]:
    """This thread in `cgroups` (hierarchy -> directory) for the block, as the executor stands in
    a job's while it forks it."""
    _move(cgroups.values())
    try:
        yield
    finally:
        _move(os.path.join(CGROUP_V1, h) for h in cgroups)


def forks(samples: int = SAMPLES, quiet: float = QUIET, cgroups: bool = False) -> list[float]:
    """Seconds to start `true` (fork, exec: until Popen returns), after `quiet`; with `cgroups`,
    born in fresh cgroup v1 directories of its own as a job is (empty: not root, or no v1)."""
    out = []
    for k in range(samples):
        made: dict[str, str] = {}
        try:
            if cgroups:
                for h in JOB_CGROUPS:
                    os.mkdir(path := os.path.join(CGROUP_V1, h, f"sgo-floor-{os.getpid()}-{k}"))
                    made[h] = path
            time.sleep(quiet)
            t0 = time.perf_counter()
            with _standing_in(made):
                proc = subprocess.Popen(["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        start_new_session=True)
            out.append(time.perf_counter() - t0)
            proc.wait()
        except OSError:  # no cgroup v1 to write here
            return []
        finally:
            for path in made.values():
                os.rmdir(path)
    return out


def store_floor(directory: Path, n: int = 50_000) -> float:
    """Jobs/s of the store alone taking one batch of `n`: its job rows and the audit row each is
    born with (PENDING), made before the clock starts, inserted as a batch submit does, in one
    transaction."""
    from sage_ops.lifecycle import JobStatus as S
    from sage_ops.lifecycle import transition
    from sage_ops.server.storage import store as st

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        store = st.Store(f"sqlite:///{tmp}/floor.db")
        now = time.time()
        spec = json.dumps({"command": ["true"], "resources": {"cpu": 1}})
        ids = [f"{i:012x}" for i in range(n)]
        jobs = [st.new_job_row(id=i, seq=k + 1, name="true", tenant=None, status="PENDING", reason=None, priority=0,
                               kind="command", spec=spec, created_at=now, updated_at=now, held=False)
                for k, i in enumerate(ids)]
        events = [st.event_row(transition(i, None, S.PENDING, "admitted"), now) for i in ids]
        t0 = time.perf_counter()
        with store.engine.begin() as conn:
            st.insert_jobs(conn, jobs, events)
        elapsed = time.perf_counter() - t0
        store.close()  # its writer thread, its engine, its lock file
    return n / elapsed


def run(args: Any) -> dict[str, Any]:
    bench = Bench()
    health = bench.start()
    try:
        calls = ray_calls(health["ray"]["address"], bench.state)
    finally:
        bench.stop()
    where = bench.home.parent  # the file system of the daemon's database
    figures: dict[str, Any] = {
        "ray_call_quiet_p50_ms": ms(calls["quiet"], 50), "ray_call_quiet_p99_ms": ms(calls["quiet"], 99),
        "ray_call_busy_p50_ms": ms(calls["busy"], 50),
        "commit_quiet_p50_ms": ms(commits(where), 50), "fork_quiet_p50_ms": ms(forks(), 50)}
    if born_in := forks(cgroups=True):
        figures["fork_in_cgroups_quiet_p50_ms"] = ms(born_in, 50)
    fork = figures.get("fork_in_cgroups_quiet_p50_ms", figures["fork_quiet_p50_ms"])
    hops = 2 * figures["ray_call_quiet_p50_ms"]
    figures["two_hops_floor_ms"] = round(figures["commit_quiet_p50_ms"] + hops + fork, 2)
    figures["store_floor_per_s"] = round(store_floor(where, args.batch))
    print(f"  one Ray actor call: {figures['ray_call_quiet_p50_ms']:.2f} ms after {QUIET * 1000:.0f} ms of quiet "
          f"(p50), {figures['ray_call_busy_p50_ms']:.2f} ms back to back")
    print(f"  a durable commit  : {figures['commit_quiet_p50_ms']:.2f} ms; starting `true`: "
          f"{figures['fork_quiet_p50_ms']:.2f} ms, {fork:.2f} ms born in its cgroups (p50, after the same quiet)")
    print(f"  submit->RUNNING with no sage-ops code: {figures['two_hops_floor_ms']:.2f} ms (commit, two calls, a fork)")
    print(f"  the store alone   : {figures['store_floor_per_s']:,} jobs/s for a batch of {args.batch:,} "
          f"(its rows and audit rows, one transaction)")
    return figures


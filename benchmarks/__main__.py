"""The benchmark suite: each scenario on a private daemon of its own, a table of figures at the end
and the same figures as JSON.

    python -m benchmarks all                      # every scenario at its default size
    python -m benchmarks store --jobs 1000000     # one scenario, its size as a flag
    python -m benchmarks submit e2e --json out.json

Scenarios: submit, e2e (with Ray's Job Submission API side by side), store, logs, events, soak, cli
(the CLI's latency, with `ray job list` side by side), floors (the parts a job's path is made of,
each alone: what bounds a figure that misses its goal).
Figures are printed and written, never asserted; goals (issue 10, on a 2-core machine) are shown
next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import platform
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_latency import GOALS as CLI_GOALS  # noqa: E402
from common import table  # noqa: E402

SCENARIOS = {"submit": "submit_rates", "e2e": "end_to_end", "store": "store_scale", "logs": "log_follow",
             "events": "event_fanout", "soak": "soak", "cli": "cli_latency", "floors": "floors"}
GOALS = {
    "single_unix_16_per_s": ">= 1,500", "single_tcp_16_per_s": ">= 1,500", "batch_unix_per_s": ">= 50,000",
    "batch_tcp_per_s": ">= 50,000", "flat_per_s": ">= 500", "python_flat_per_s": ">= 500",
    "submit_to_running_p50_ms": "<= 5", "submit_to_running_p99_ms": "<= 20", "jobs_first_page_p99_ms": "<= 50",
    "status_job_p99_ms": "<= 10", "daemon_start_s": "<= 3", "daemon_rss_mb": "<= 300",
    "follower_mb_per_s": ">= 100", "follower_lag_p99_ms": "<= 250", "worst_lag_s": "<= 1",
    "silently_dropped": "0", "lost_jobs": "0", "duplicated_jobs": "0", "rss_trend_mb_per_hour": "~0",
    "client_unix_1_per_s": ">= 500", "client_tcp_1_per_s": ">= 500", **CLI_GOALS,  # issue 20
}


def machine() -> dict[str, Any]:
    mem = next((int(ln.split()[1]) // 1024 for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), 0)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    import ray

    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_mb": mem, "python": platform.python_version(),
            "ray": ray.__version__, "os": platform.platform()}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="+", choices=["all", *SCENARIOS])
    ap.add_argument("--json", metavar="FILE", default="benchmark-results.json", help="where the figures go")
    size = ap.add_argument_group("sizes")
    size.add_argument("-n", type=int, default=1000, help="single submits per mode; end-to-end jobs")
    size.add_argument("--batch", type=int, default=50_000, help="jobs in one batch submit")
    size.add_argument("--no-ray-jobs", action="store_true", help="e2e: skip Ray's Job Submission API")
    size.add_argument("--ray-window", type=int, default=8, help="Ray jobs in flight at once")
    size.add_argument("--ray-jobs-n", type=int, default=100, help="e2e: jobs through Ray's Job Submission API")
    size.add_argument("--latency-samples", type=int, default=100, help="e2e: submit->RUNNING samples")
    size.add_argument("--jobs", type=int, default=1_000_000, help="store: finished jobs in the database")
    size.add_argument("--postgres", action="store_true", help="store: on a throwaway PostgreSQL, not SQLite")
    size.add_argument("--samples", type=int, default=200, help="store: requests per query")
    size.add_argument("--log-mb", type=int, default=1024, help="logs: stdout the job writes, MiB")
    size.add_argument("--followers", type=int, default=50, help="logs: followers at once; events: subscribers")
    size.add_argument("--burst", type=int, default=10_000, help="events: jobs in the burst")
    size.add_argument("--minutes", type=float, default=30, help="soak: how long")
    size.add_argument("--cli-runs", type=int, default=15, help="cli: runs of each command (the median is shown)")
    args = ap.parse_args()
    chosen = list(SCENARIOS) if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))
    figures: dict[str, dict[str, Any]] = {}
    out = Path(args.json)
    for name in chosen:
        print(f"== {name}", flush=True)
        module = __import__(SCENARIOS[name])
        result = module.run(args)
        figures[name] = asyncio.run(result) if inspect.isawaitable(result) else result
        out.write_text(json.dumps({"when": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                                   "figures": figures}, indent=2))
    print()
    print(table(figures, GOALS))
    print(f"\nfigures written to {out}")


if __name__ == "__main__":
    main()

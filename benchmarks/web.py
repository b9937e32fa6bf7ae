"""The web dashboard with history and under a burst: a store of `--jobs` finished jobs (1,000,000
by default, written straight into the tables as `benchmarks store` does), the daemon on TCP, and

- the jobs page's time (first page, filtered by status and by name glob, sorted by name, the next
  page, a job's page) as p50/p99 from a loopback client, beside the API's own `GET /v1/jobs` for
  the same first page and the issue's anchor of 150 ms;
- a real browser (Debian's Chromium through Playwright) on the live jobs page while `--burst`
  jobs (10,000) are submitted at once: how many changes reached the page, how many times it
  reloaded its rows (coalesced: about one a second), its longest frame (a freeze shows as a long
  one) and how long after the burst the table showed its newest job.

    python benchmarks/web.py [--jobs 1000000] [--burst 10000]

The burst's jobs are submitted held (they wait, they do not run), then cancelled. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Bench, ms  # noqa: E402
from store_scale import populate_sqlite, recount, timed  # noqa: E402

ANCHOR_MS = 150.0
GAPS = """() => { window.gaps = []; let last = performance.now();
  const tick = (t) => { window.gaps.push(t - last); last = t; requestAnimationFrame(tick); };
  requestAnimationFrame(tick); }"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=50)
    args = ap.parse_args()
    import httpx

    from sage_ops.client import JobManagerClient

    bench = Bench()
    try:
        bench.start()
        bench.stop_daemon()
        t = time.perf_counter()
        populate_sqlite(bench.db, args.jobs)
        recount(f"sqlite:///{bench.db}")
        print(f"web benchmark: {args.jobs:,} finished jobs written in {time.perf_counter() - t:.0f} s")
        health = bench.start("--tcp", "127.0.0.1:0")
        base = f"http://{health['tcp']}"
        token = json.loads(bench.cli("token", "create", "--name", "bench-web", "--role", "admin", "--json"))["token"]
        web = httpx.Client(base_url=base, timeout=120)
        assert web.post("/web/login", data={"token": token, "next": "/web/jobs"}).status_code == 303
        api = httpx.Client(base_url=base, timeout=120, headers={"authorization": f"Bearer {token}"})
        first = api.get("/v1/jobs", params={"limit": 50}).json()
        some = first["jobs"][0]["id"]
        pages = {
            "API GET /v1/jobs (50, the same query)": lambda: api.get("/v1/jobs", params={"limit": 50}),
            "jobs page": lambda: web.get("/web/jobs"),
            "jobs page, status FAILED": lambda: web.get("/web/jobs", params={"status": "FAILED"}),
            "jobs page, name sweep-12*": lambda: web.get("/web/jobs", params={"name": "sweep-12*"}),
            "jobs page, sorted by name": lambda: web.get("/web/jobs", params={"sort": "name"}),
            "jobs page, the next page": lambda: web.get("/web/jobs", params={"cursor": first["next_cursor"]}),
            "rows only (what a live reload fetches)": lambda: web.get("/web/jobs", params={"partial": "rows"}),
            "a job's page": lambda: web.get(f"/web/jobs/{some}"),
        }
        print(f"  page times at {args.jobs:,} jobs, loopback client (anchor: <= {ANCHOR_MS:.0f} ms server time)")
        for label, fn in pages.items():
            assert fn().status_code == 200, label
            lat = timed(fn, args.samples)
            print(f"    {label:42s} p50 {ms(lat, 50):7.1f} ms   p99 {ms(lat, 99):7.1f} ms")
        burst(base, token, args.burst, JobManagerClient(bench.address, config={"timeout": 300}))
    finally:
        bench.stop()


def burst(base: str, token: str, n: int, client: Any) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("  browser: skipped (no chromium: apt install chromium)")
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + "/web/login")
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_selector("#live:has-text('live')")
            page.mouse.move(0, 0)
            page.evaluate(GAPS)
            t0 = time.perf_counter()
            refs = client.submit_batch([{"command": ["true"], "name": f"burst-{i}", "hold": True} for i in range(n)])
            submitted = time.perf_counter() - t0
            newest = refs[-1].id
            page.wait_for_selector(f"tr[data-id='{newest}']", timeout=300_000)
            shown = time.perf_counter() - t0
            page.wait_for_timeout(2000)  # the last coalesced reloads
            stats = page.evaluate("() => ({...window.sageOps, maxGap: Math.max(...window.gaps.slice(1)), "
                                  "frames: window.gaps.length})")
            print(f"  browser, {n:,} held jobs submitted at once ({submitted:.1f} s for the batch):")
            print(f"    changes received by the page {stats['events']:,}; row reloads {stats['reloads']} "
                  f"(coalesced: at most one a second)")
            print(f"    newest job in the table {shown - submitted:.1f} s after the batch returned; "
                  f"longest frame {stats['maxGap']:.0f} ms over {stats['frames']} frames")
        finally:
            browser.close()
            client.cancel_jobs(status=["PENDING", "SUBMITTED"])


if __name__ == "__main__":
    main()

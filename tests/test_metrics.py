"""Metrics: `/metrics` in Prometheus text format, read by Prometheus' own parser, after real jobs."""

from __future__ import annotations

import json

import httpx
from conftest import Daemon, wait_until
from prometheus_client.parser import text_string_to_metric_families


def scrape(d: Daemon, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://x") as h:
        return h.get("/metrics", headers=headers)


def test_metrics_parse_and_count_what_happened(daemon: Daemon) -> None:
    client = daemon.client()
    ids = [client.submit_command(["true"]) for _ in range(5)]
    for i in ids:
        assert client.wait(i, timeout=60).status == "COMPLETED"
    daemon.run("tenant", "create", "metered", "--max-running", "3", check=True)
    r = scrape(daemon)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(r.text) for s in fam.samples}
    assert samples[("sage_ops_jobs", (("status", "COMPLETED"),))] >= 5
    assert samples[("sage_ops_finished_total", (("status", "COMPLETED"),))] >= 5
    assert samples[("sage_ops_dispatched_total", ())] >= 5
    assert samples[("sage_ops_up", (("role", "leader"),))] == 1
    assert samples[("sage_ops_cluster_resource", (("resource", "CPU"), ("state", "total")))] > 0
    assert samples[("sage_ops_tenant_running_jobs", (("tenant", "metered"),))] == 0
    member = json.loads(daemon.run("token", "create", "--tenant", "metered", "--name", "m", "--json",
                                   check=True).stdout)["token"]
    denied = scrape(daemon, member)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"


def test_the_series_show_a_burst_and_the_cli_charts_it(new_daemon) -> None:  # noqa: ANN001
    d = new_daemon({"metrics": {"interval": 1}})
    d.start()
    client = d.client()
    wait_until(lambda: client.metrics_series(300).points, timeout=30)  # the sampler's first count is taken:
    refs = client.submit_batch([{"command": ["true"], "name": f"burst-{i}"} for i in range(30)])
    waited = d.run("wait", *(r.id for r in refs), timeout=180)  # many jobs: progress on stderr
    assert waited.returncode == 0 and "wait: 30/30 ended" in waited.stderr
    assert len(waited.stdout.splitlines()) == 30

    def seen() -> object:
        s = client.metrics_series(300)
        return s if sum(p.finished for p in s.points) >= 30 else None

    series = wait_until(seen, timeout=30)
    assert series.step_s == 1 and sum(p.submitted for p in series.points) >= 30
    assert sum(p.started for p in series.points) >= 30
    last = series.points[-1]
    assert last.cpu_total > 0 and last.memory_total > 0 and last.nodes
    assert all(n.cpu_total > 0 for n in last.nodes.values())

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(scrape(d).text) for s in fam.samples}
    assert samples[("sage_ops_submitted_total", ())] >= 30
    node = next(iter(last.nodes))
    assert samples[("sage_ops_node_resource", (("node", node), ("resource", "cpu"), ("state", "total")))] > 0

    chart = d.run("stats", "--chart", "--width", "100", "--window", "5m", check=True).stdout
    assert "jobs per minute" in chart and "cluster use %" in chart and "\x1b[" not in chart
    assert max(len(line) for line in chart.splitlines()) <= 100
    plain = d.run("stats", "--chart", "--window", "5m", check=True).stdout.splitlines()  # not a TTY: numbers
    assert plain[0].split()[:3] == ["time", "seconds", "submitted"] and plain[-1].startswith("total")
    as_json = json.loads(d.run("stats", "--json", "--window", "1h", check=True).stdout)
    assert as_json["window_s"] == 3600 and as_json["points"]
    bad = d.run("stats", "--window", "soon")
    assert bad.returncode == 2 and "bad duration 'soon'" in bad.stderr


def test_samples_roll_up_and_expire_so_a_week_stays_small(tmp_path) -> None:  # noqa: ANN001
    from datetime import datetime, timezone

    from sage_ops.config import MetricsConfig
    from sage_ops.server.services import metrics
    from sage_ops.server.storage.store import Store
    from sage_ops.telemetry import MetricPoint, NodeUsage

    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    cfg = MetricsConfig(interval=5)
    sampler = metrics.Rollups(cfg)
    start = 1_700_000_000.0 - 1_700_000_000.0 % 600
    hours = 5
    try:
        with store.engine.begin() as conn:
            for i in range(hours * 720):
                t = start + i * 5
                point = MetricPoint(time=datetime.fromtimestamp(t, timezone.utc), seconds=5, finished=2,
                                    queue_depth=i % 3, cpu_used=1, cpu_total=4,
                                    nodes={"a": NodeUsage(cpu_used=1, cpu_total=4)})
                sampler.record(conn, point, t + 5)
            now = start + hours * 3600
            fine = metrics.series(conn, cfg, 3600, now)
            coarse = metrics.series(conn, cfg, 86400, now)
            rows = dict(conn.exec_driver_sql("SELECT level, count(*) FROM metricsample GROUP BY level").all())
    finally:
        store.close()
    assert fine.step_s == 5 and len(fine.points) == 720
    assert coarse.step_s == 60 and len(coarse.points) == hours * 60  # every minute that has ended
    minute = coarse.points[10]
    assert minute.finished == 24 and minute.queue_depth == 1 and minute.nodes["a"].cpu_total == 4
    assert rows[0] <= 2 * 720 + 12  # the sampling interval is kept two hours (pruned once a minute)
    assert rows[2] == hours * 6

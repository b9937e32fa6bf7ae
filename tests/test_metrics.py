"""Metrics: `/metrics` in Prometheus text format, read by Prometheus' own parser, after real jobs."""

from __future__ import annotations

import json

import httpx
from conftest import Daemon
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

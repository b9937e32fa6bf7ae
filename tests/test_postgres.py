"""The same daemon on a real PostgreSQL (initdb/pg_ctl as the `postgres` user)."""

from __future__ import annotations

import json

from conftest import Daemon, wait_until


def test_jobs_on_postgresql(new_daemon, postgres) -> None:  # noqa: ANN001
    url = postgres()
    # a lease far longer than the test: only a stop that releases it lets the restart lead
    d: Daemon = new_daemon({"database": {"url": url}, "jobmanager": {"heartbeat_interval": 600}})
    d.start()
    health = json.loads(d.run("health", "--json", check=True).stdout)
    assert health["database"]["ok"] and health["database"]["url"].startswith("postgresql+psycopg://")
    a = d.submit_q("--name", "pg-a", "--", "sh", "-c", "echo on-postgres")
    b = d.submit_q("--after", a, "--retries", "1", "--", "true")
    assert d.run("wait", a, b).returncode == 0
    assert "on-postgres" in d.run("logs", a, check=True).stdout
    assert json.loads(d.run("graph", b, "--json", check=True).stdout)["completed"] == 2
    stream = [(e.job_id, e.to_status) for e in d.client().stream_events(after=0, follow=False)]
    assert (b, "COMPLETED") in stream  # the event stream's page query, on PostgreSQL
    out = d.run("cancel", "--name", "nothing-*")
    assert out.returncode == 0
    d.stop()
    d.start()  # restart on the same database: it leads at once, and everything is there
    wait_until(lambda: json.loads(d.run("health", "--json", check=True).stdout)["role"] == "leader")
    names = {j["name"] for j in json.loads(d.run("jobs", "--json", check=True).stdout)}
    assert "pg-a" in names

"""The dashboard over HTTP (tests/test_web_browser.py drives it in a real browser): login and its
cookie, the pages' security headers, CSRF refused, a viewer who cannot act, a member who cannot
open another tenant's job by its URL, and the session cookie's seal. A real daemon on TCP with
real tokens; the pages call its real API as their visitor."""

from __future__ import annotations

import html
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SAGE, Daemon, wait_until
from test_security import _self_signed as self_signed

from sage_ops.web.session import COOKIE, Sessions

IDLE = {"cpu": 0}  # a job that sleeps holds no CPU of the session's head


@pytest.fixture(scope="module")
def site(ray_head: dict[str, str]) -> Iterator[dict[str, Any]]:
    d = Daemon(ray_head)
    d.start("--tcp", "127.0.0.1:0")
    try:
        for tenant in ("red", "blue"):
            d.run("tenant", "create", tenant, check=True)
        admin = d.client(timeout=60)
        tokens = {"admin": d.token("--name", "web-admin", "--role", "admin"),
                  "red": d.token("--name", "red-member", "--tenant", "red"),
                  "viewer": d.token("--name", "red-viewer", "--tenant", "red", "--role", "viewer"),
                  "blue": d.token("--name", "blue-member", "--tenant", "blue")}
        jobs = {"red": admin.submit_command(["sleep", "3600"], tenant="red", name="red-sleeper", resources=IDLE),
                "blue": admin.submit_command(["sleep", "3600"], tenant="blue", name="blue-sleeper", resources=IDLE)}
        yield {"daemon": d, "base": f"http://{admin.health_check().tcp}", "tokens": tokens, "jobs": jobs}
    finally:
        d.cleanup()


def browser(site: dict[str, Any], who: str | None = None) -> httpx.Client:
    """A client with a cookie jar, logged in as `who` (None: not logged in)."""
    c = httpx.Client(base_url=site["base"], timeout=30, follow_redirects=False)
    if who is not None:
        answer = c.post("/web/login", data={"token": site["tokens"][who], "next": "/web/jobs"})
        assert answer.status_code == 303, answer.text
    return c


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


def test_the_root_leads_to_the_jobs_page(site: dict[str, Any]) -> None:
    assert browser(site).get("/").headers["location"] == "/web/jobs"


def test_a_page_without_a_session_leads_to_the_login_form(site: dict[str, Any]) -> None:
    assert browser(site).get("/web/jobs").headers["location"].startswith("/web/login?next=%2Fweb%2Fjobs")


def test_a_wrong_token_is_refused_with_the_apis_reason(site: dict[str, Any]) -> None:
    answer = browser(site).post("/web/login", data={"token": "nope", "next": "/web/jobs"})
    assert (answer.status_code, "invalid or revoked token" in answer.text) == (401, True)


def test_the_session_cookie_is_httponly_and_samesite_strict(site: dict[str, Any]) -> None:
    answer = browser(site).post("/web/login", data={"token": site["tokens"]["red"], "next": "/web/jobs"})
    cookie = answer.headers["set-cookie"].lower()
    assert ("httponly" in cookie, "samesite=strict" in cookie) == (True, True)


def test_the_session_cookie_does_not_hold_the_token_in_clear(site: dict[str, Any]) -> None:
    answer = browser(site).post("/web/login", data={"token": site["tokens"]["red"], "next": "/web/jobs"})
    assert site["tokens"]["red"] not in answer.headers["set-cookie"]


def test_login_never_sends_the_visitor_to_another_site(site: dict[str, Any]) -> None:
    answer = browser(site).post("/web/login", data={"token": site["tokens"]["red"], "next": "//evil.example/x"})
    assert answer.headers["location"] == "/web/jobs"


def test_every_page_has_a_csp_without_inline_script(site: dict[str, Any]) -> None:
    csp = browser(site, "red").get("/web/jobs").headers["content-security-policy"]
    assert ("script-src 'self'" in csp, "unsafe-inline" in csp) == (True, False)


def test_no_page_has_an_inline_script(site: dict[str, Any]) -> None:
    page = browser(site, "admin").get(f"/web/jobs/{site['jobs']['red']}").text
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []


def test_a_member_sees_its_tenants_jobs(site: dict[str, Any]) -> None:
    assert "red-sleeper" in browser(site, "red").get("/web/jobs").text


def test_a_member_does_not_see_another_tenants_jobs_in_the_list(site: dict[str, Any]) -> None:
    assert "blue-sleeper" not in browser(site, "red").get("/web/jobs").text


def test_a_member_cannot_open_another_tenants_job_by_its_url(site: dict[str, Any]) -> None:
    answer = browser(site, "red").get(f"/web/jobs/{site['jobs']['blue']}")
    assert (answer.status_code, "no such job" in answer.text) == (404, True)


def test_a_member_cannot_read_another_tenants_log_by_its_url(site: dict[str, Any]) -> None:
    assert browser(site, "red").get(f"/web/jobs/{site['jobs']['blue']}/log.txt").status_code == 404


def test_an_action_without_the_csrf_token_is_refused(site: dict[str, Any]) -> None:
    c = browser(site, "blue")
    answer = c.post(f"/web/jobs/{site['jobs']['blue']}/hold", data={"csrf": "forged"})
    assert answer.status_code == 403


def test_an_action_refused_for_csrf_changes_nothing(site: dict[str, Any]) -> None:
    c = browser(site, "blue")
    c.post(f"/web/jobs/{site['jobs']['blue']}/cancel", data={})
    assert site["daemon"].client().get_job_status(site["jobs"]["blue"]) != "CANCELLED"


def test_a_viewer_cannot_act(site: dict[str, Any]) -> None:
    c = browser(site, "viewer")
    job = site["jobs"]["red"]
    csrf = csrf_of(c.get(f"/web/jobs/{job}").text)
    answer = c.post(f"/web/jobs/{job}/cancel", data={"csrf": csrf}, follow_redirects=True)
    assert "cancel refused: a viewer token is read-only" in answer.text


def test_a_viewers_refused_cancel_leaves_the_job_alone(site: dict[str, Any]) -> None:
    c = browser(site, "viewer")
    job = site["jobs"]["red"]
    c.post(f"/web/jobs/{job}/cancel", data={"csrf": csrf_of(c.get(f"/web/jobs/{job}").text)})
    assert site["daemon"].client().get_job_status(job) != "CANCELLED"


def test_a_member_cancels_its_job_from_the_page(site: dict[str, Any]) -> None:
    d = site["daemon"]
    job = d.client().submit_command(["sleep", "3600"], tenant="red", name="red-to-cancel", resources=IDLE)
    c = browser(site, "red")
    c.post(f"/web/jobs/{job}/cancel", data={"csrf": csrf_of(c.get(f"/web/jobs/{job}").text)})
    assert wait_until(lambda: d.client().get_job_status(job) == "CANCELLED", timeout=60)


def test_the_audit_names_the_visitors_token_for_an_action(site: dict[str, Any]) -> None:
    d = site["daemon"]
    job = d.client().submit_command(["sleep", "3600"], tenant="red", name="red-audited", resources=IDLE)
    c = browser(site, "red")
    c.post(f"/web/jobs/{job}/hold", data={"csrf": csrf_of(c.get(f"/web/jobs/{job}").text)})
    entry = wait_until(lambda: next((e for e in d.client().audit(action="hold") if e.target == job), None),
                       timeout=30, interval=0.5)
    assert entry.actor.startswith("token:red-member#")


def test_the_events_stream_needs_a_session(site: dict[str, Any]) -> None:
    assert browser(site).get("/web/events").status_code == 401


def test_a_forged_cookie_is_no_session(site: dict[str, Any]) -> None:
    c = browser(site)
    c.cookies.set(COOKIE, "AAAA" * 20)
    assert c.get("/web/jobs").status_code == 303


def test_a_sealed_session_opens_with_its_key_only() -> None:
    value, _ = Sessions(b"k" * 32).new("tok")
    assert (Sessions(b"k" * 32).open(value) is not None, Sessions(b"x" * 32).open(value)) == (True, None)


def test_an_expired_session_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = Sessions(b"k" * 32)
    value, _ = sessions.new("tok")
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)
    assert sessions.open(value) is None


# -- `sage-ops web`: the dashboard on loopback from a process of the user's own ---------------------
@pytest.fixture(scope="module")
def local(site: dict[str, Any]) -> Iterator[dict[str, Any]]:
    d = site["daemon"]
    proc = subprocess.Popen([*SAGE, "web"], env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)] if proc.stdout else []
        link = re.search(r"(http://127\.0\.0\.1:\d+)/web/login\?code=\S+", lines[1]).group(0)  # type: ignore[union-attr]
        c = httpx.Client(base_url=link.split("/web/")[0], timeout=30, follow_redirects=False)
        facts = {"first": c.get(link), "jobs": c.get("/web/jobs"), "again": httpx.get(link, timeout=30),
                 "api": c.get("/v1/jobs")}
        proc.send_signal(signal.SIGINT)
        facts["exit"] = proc.wait(30)
        yield facts
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_login_link_logs_the_browser_in(local: dict[str, Any]) -> None:
    assert local["first"].headers["location"] == "/web/jobs"


def test_the_link_logs_in_with_a_token_of_the_users_own(local: dict[str, Any]) -> None:
    assert re.search(r"token:web-uid:\d+#\d+ · admin", local["jobs"].text)


def test_the_login_link_works_once(local: dict[str, Any]) -> None:
    assert (local["again"].status_code, "used already" in local["again"].text) == (401, True)


def test_the_local_dashboard_does_not_expose_the_api(local: dict[str, Any]) -> None:
    assert local["api"].status_code == 404


def test_ctrl_c_stops_the_local_dashboard_with_the_clis_exit_code_for_it(local: dict[str, Any]) -> None:
    assert local["exit"] == 130


def test_a_token_holder_cannot_mint_another_token(site: dict[str, Any]) -> None:
    """A stolen token must not buy a second one that outlives its revocation."""
    c = httpx.Client(base_url=site["base"], timeout=30)
    answer = c.post("/v1/tokens/self", json={}, headers={"authorization": f"Bearer {site['tokens']['admin']}"})
    assert answer.status_code == 403


# -- the other pages ------------------------------------------------------------------------------------
def test_the_submit_form_submits_a_job_as_the_visitor(site: dict[str, Any]) -> None:
    c = browser(site, "admin")
    csrf = csrf_of(c.get("/web/submit").text)
    answer = c.post("/web/submit", data={"csrf": csrf, "command": "sh -c 'echo from the form'", "name": "formed",
                                         "cpu": "1", "gpu": "0", "priority": "3", "retries": "0"})
    assert answer.status_code == 303, re.findall(r'role="alert">([^<]*)', answer.text)
    job = site["daemon"].client().get_job(answer.headers["location"].split("/web/jobs/")[1].split("?")[0])
    assert (job.name, job.priority, job.spec.command) == ("formed", 3, ["sh", "-c", "echo from the form"])


def test_the_submit_form_says_why_the_api_refused(site: dict[str, Any]) -> None:
    c = browser(site, "red")  # a tenant without a run_as user: its tokens may not run jobs here
    answer = c.post("/web/submit", data={"csrf": csrf_of(c.get("/web/submit").text), "command": "true"})
    assert (answer.status_code, "has no run_as user" in answer.text) == (403, True)


def test_the_submit_form_says_what_is_wrong_with_a_command(site: dict[str, Any]) -> None:
    c = browser(site, "red")
    answer = c.post("/web/submit", data={"csrf": csrf_of(c.get("/web/submit").text), "command": "echo 'unclosed"})
    assert (answer.status_code, "command: No closing quotation" in answer.text) == (400, True)


def test_the_priority_is_set_from_the_job_page(site: dict[str, Any]) -> None:
    d = site["daemon"]
    job = d.client().submit_command(["sleep", "3600"], tenant="red", name="red-prio", resources=IDLE,
                                    hold=True)  # a priority changes only while the job waits
    c = browser(site, "red")
    c.post(f"/web/jobs/{job}/priority", data={"csrf": csrf_of(c.get(f"/web/jobs/{job}").text), "priority": "42"})
    assert d.client().get_job(job).priority == 42


def test_a_member_is_told_the_audit_page_is_for_admins(site: dict[str, Any]) -> None:
    answer = browser(site, "red").get("/web/audit")
    assert (answer.status_code, "is not an admin" in answer.text) == (403, True)


def test_an_admin_sees_every_tenant(site: dict[str, Any]) -> None:
    page = browser(site, "admin").get("/web/tenants").text
    assert ("red" in page, "blue" in page) == (True, True)


def test_the_charts_page_draws_three_charts(site: dict[str, Any]) -> None:
    assert browser(site, "red").get("/web/charts?window=15m").text.count("<figure") == 3


def test_a_priority_is_set_for_every_selected_job(site: dict[str, Any]) -> None:
    d = site["daemon"]
    jobs = [d.client().submit_command(["sleep", "3600"], tenant="red", name=f"red-bulk-{i}", resources=IDLE,
                                      hold=True) for i in range(2)]  # a priority changes only while jobs wait
    c = browser(site, "red")
    c.post("/web/jobs", data={"csrf": csrf_of(c.get("/web/jobs").text), "action": "priority", "priority": "9",
                              "ids": jobs, "back": "/web/jobs"})
    assert [d.client().get_job(j).priority for j in jobs] == [9, 9]


def test_a_completed_jobs_result_is_on_its_page(site: dict[str, Any]) -> None:
    d = site["daemon"]
    script = d.home / "result.py"  # a script job runs with the worker's Python, where sage_ops is
    script.write_text("from sage_ops.job import set_result\nset_result({'accuracy': 0.93})\n")
    job = d.submit_q("--name", "with-result", str(script))
    d.client().wait(job, timeout=120)
    assert '"accuracy": 0.93' in html.unescape(browser(site, "admin").get(f"/web/jobs/{job}").text)


def test_an_arrays_tasks_are_a_link_away(site: dict[str, Any]) -> None:
    d = site["daemon"]
    array = d.submit_q("--array", "0-2", "--name", "arr", "--", "true")
    d.client().wait(array, timeout=120)
    page = browser(site, "admin").get("/web/jobs", params={"array": array}).text
    assert page.count(f'data-id="{array}_') == 3


def test_the_session_cookie_is_secure_over_tls(new_daemon: Any, tmp_path: Path) -> None:
    ca, cert, key = self_signed(tmp_path)
    d = new_daemon()
    d.start("--tcp", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key))
    base = f"https://{d.client().health_check().tcp}"
    admin = (d.home / "config" / "sage-ops" / "token").read_text().strip()
    trusted = ssl.create_default_context(cafile=str(ca))
    answer = httpx.post(f"{base}/web/login", data={"token": admin, "next": "/web/jobs"}, verify=trusted, timeout=30)
    assert "secure" in answer.headers["set-cookie"].lower().split("; ")

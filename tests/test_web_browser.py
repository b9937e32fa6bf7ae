"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright. Login, the
live table receiving a job submitted from the CLI (no reload), cancel from the page, a job's live
log, the graph, a member who cannot see another tenant's job by its URL, a viewer who cannot act,
CSRF refused. Every page is also photographed at 1280x800 and 390x844 (light and dark) into
build/screenshots/, to be looked at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt install chromium)")


@pytest.fixture(scope="module")
def site(ray_head: dict[str, str]) -> Iterator[dict[str, Any]]:
    d = Daemon(ray_head)
    d.start("--tcp", "127.0.0.1:0")
    try:
        for tenant in ("red", "blue"):
            d.run("tenant", "create", tenant, check=True)
        admin = d.client(timeout=60)
        blue = admin.submit_command(["sleep", "3600"], tenant="blue", name="blue-secret", resources={"cpu": 0})
        yield {"daemon": d, "base": f"http://{admin.health_check().tcp}", "blue_job": blue,
               "tokens": {"admin": d.token("--name", "b-admin", "--role", "admin"),
                          "red": d.token("--name", "b-red", "--tenant", "red"),
                          "viewer": d.token("--name", "b-viewer", "--tenant", "red", "--role", "viewer")}}
    finally:
        d.cleanup()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def logged_in(chromium: Any, site: dict[str, Any], who: str, width: int = 1280, height: int = 800,
              dark: bool = False) -> Any:
    """A fresh browser context (its own cookies), logged in through the form."""
    context = chromium.new_context(viewport={"width": width, "height": height},
                                   color_scheme="dark" if dark else "light")
    page = context.new_page()
    page.goto(site["base"] + "/")
    page.fill("#token", site["tokens"][who])
    page.click("button[type=submit]")
    page.wait_for_selector("#jobs")
    return page


def shoot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def test_login_lands_on_the_jobs_table(chromium: Any, site: dict[str, Any]) -> None:
    page = logged_in(chromium, site, "admin")
    assert page.title() == "Jobs · sage-ops"


def test_the_table_shows_a_job_submitted_from_the_cli_without_a_reload(chromium: Any, site: dict[str, Any]) -> None:
    page = logged_in(chromium, site, "admin")
    page.wait_for_selector("#live:has-text('live')")
    job = site["daemon"].submit_q("--name", "from-the-cli", "--", "sleep", "3600")
    page.mouse.move(0, 0)  # not over the table: updates apply
    page.wait_for_selector(f"tr[data-id='{job}']", timeout=30_000)
    assert page.locator(f"tr[data-id='{job}'] td:nth-child(3)").inner_text() == "from-the-cli"


def test_cancel_from_the_page(chromium: Any, site: dict[str, Any]) -> None:
    d = site["daemon"]
    job = d.submit_q("--name", "cancel-me", "--cpu", "0", "--", "sleep", "3600")
    page = logged_in(chromium, site, "admin")
    page.goto(f"{site['base']}/web/jobs/{job}")
    page.click("form[action$='/cancel'] button")
    page.wait_for_selector(".flash")
    assert wait_until(lambda: d.client().get_job_status(job) == "CANCELLED", timeout=60)


def test_a_jobs_log_arrives_live(chromium: Any, site: dict[str, Any]) -> None:
    job = site["daemon"].submit_q("--cpu", "0", "--", "sh", "-c", "echo first; sleep 2; echo second-line; sleep 3600")
    page = logged_in(chromium, site, "admin")
    page.goto(f"{site['base']}/web/jobs/{job}")
    page.wait_for_selector("#log:has-text('second-line')", timeout=60_000)
    shoot(page, "job-1280")
    assert page.locator("#log").inner_text().splitlines()[:2] == ["first", "second-line"]


def test_the_log_search_keeps_the_matching_lines(chromium: Any, site: dict[str, Any]) -> None:
    job = site["daemon"].submit_q("--cpu", "0", "--", "sh", "-c", "echo apple; echo banana; echo apricot; sleep 3600")
    page = logged_in(chromium, site, "admin")
    page.goto(f"{site['base']}/web/jobs/{job}")
    page.wait_for_selector("#log:has-text('apricot')", timeout=60_000)
    page.fill("#log-filter", "ap")
    assert page.locator("#log").inner_text().splitlines() == ["apple", "apricot"]


def test_the_graph_draws_each_job_of_a_dag(chromium: Any, site: dict[str, Any]) -> None:
    d = site["daemon"]
    first = d.submit_q("--name", "g-prep", "--", "true")
    left = d.submit_q("--name", "g-left", "--after", first, "--", "true")
    right = d.submit_q("--name", "g-right", "--after", first, "--", "true")
    last = d.submit_q("--name", "g-report", "--after", f"{left},{right}", "--", "true")
    page = logged_in(chromium, site, "admin")
    page.goto(f"{site['base']}/web/jobs/{last}/graph")
    shoot(page, "graph-1280")
    assert page.locator("svg rect.box").count() == 4


def test_a_shared_link_leads_through_the_login_to_the_job(chromium: Any, site: dict[str, Any]) -> None:
    job = site["daemon"].submit_q("--name", "shared-link", "--cpu", "0", "--", "sleep", "3600")
    page = chromium.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(f"{site['base']}/web/jobs/{job}")  # not logged in yet: the login form first
    page.fill("#token", site["tokens"]["admin"])
    page.click("button[type=submit]")
    page.wait_for_selector("h1 code")
    assert page.locator("h1 code").inner_text() == job


def test_a_member_cannot_open_another_tenants_job_by_its_url(chromium: Any, site: dict[str, Any]) -> None:
    page = logged_in(chromium, site, "red")
    page.goto(f"{site['base']}/web/jobs/{site['blue_job']}")
    assert "no such job" in page.locator("main").inner_text()


def test_a_viewer_cannot_act(chromium: Any, site: dict[str, Any]) -> None:
    d = site["daemon"]
    job = d.client().submit_command(["sleep", "3600"], tenant="red", name="viewer-target", resources={"cpu": 0})
    page = logged_in(chromium, site, "viewer")
    page.goto(f"{site['base']}/web/jobs/{job}")
    page.click("form[action$='/cancel'] button")
    page.wait_for_selector(".flash")
    assert page.locator(".flash").inner_text() == "cancel refused: a viewer token is read-only"


def test_a_form_with_a_forged_csrf_token_is_refused(chromium: Any, site: dict[str, Any]) -> None:
    job = site["daemon"].submit_q("--cpu", "0", "--", "sleep", "3600")
    page = logged_in(chromium, site, "admin")
    page.goto(f"{site['base']}/web/jobs/{job}")
    page.eval_on_selector("form[action$='/cancel'] input[name=csrf]", "e => e.value = 'forged'")
    page.click("form[action$='/cancel'] button")
    assert "CSRF token does not match" in page.locator("body").inner_text()


def test_every_page_is_photographed_wide_and_narrow(chromium: Any, site: dict[str, Any]) -> None:
    job = site["daemon"].submit_q("--name", "photo", "--cpu", "0", "--", "sh", "-c", "echo hello; sleep 3600")
    pages = {"jobs": "/web/jobs", "job": f"/web/jobs/{job}", "nodes": "/web/nodes", "graph": f"/web/jobs/{job}/graph",
             "charts": "/web/charts", "tenants": "/web/tenants", "audit": "/web/audit", "submit": "/web/submit"}
    for width, height, dark in ((1280, 800, False), (390, 844, False), (390, 844, True)):
        page = logged_in(chromium, site, "admin", width, height, dark)
        for name, path in pages.items():
            page.goto(site["base"] + path)
            shoot(page, f"{name}-{width}{'-dark' if dark else ''}")
    login = chromium.new_page(viewport={"width": 390, "height": 844})
    login.goto(site["base"] + "/web/login")
    shoot(login, "login-390")
    assert len(list(SHOTS.glob("*.png"))) >= 25


def test_the_keyboard_reaches_the_content_first_through_the_skip_link(chromium: Any, site: dict[str, Any]) -> None:
    page = logged_in(chromium, site, "admin")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("() => location.hash") == "#main"


def test_every_control_has_a_label(chromium: Any, site: dict[str, Any]) -> None:
    job = site["daemon"].submit_q("--name", "labels", "--cpu", "0", "--", "sleep", "3600")
    page = logged_in(chromium, site, "admin")
    unlabelled: dict[str, list[str]] = {}
    for path in ("/web/jobs", f"/web/jobs/{job}", "/web/submit", "/web/audit", "/web/charts"):
        page.goto(site["base"] + path)
        unlabelled[path] = page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select')]
            .filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.name || e.id)""")
    assert unlabelled == {p: [] for p in unlabelled}

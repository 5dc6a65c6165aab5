"""An admin in a real Chromium: creates a KB, adds a files source, syncs it while the page follows the job,
then reads the KB's decision and opens its report."""

from __future__ import annotations

import re

from tests.browser import axe_violations, screenshot_path
from tests.estimates import make_estimates

PHONE = 375


def test_admin_adds_a_source_syncs_it_and_reads_the_decision_and_report(console, open_tab):
    docs = console.root / "policies"
    docs.mkdir()
    (docs / "travel.md").write_text("# Travel\n\nTrain travel is booked in second class; flights need approval.\n")
    (docs / "expenses.md").write_text("# Expenses\n\nReceipts are due within 30 days of the purchase.\n")
    (docs / "equipment.md").write_text("# Equipment\n\nEvery employee gets a laptop and a headset.\n")
    tab = open_tab()
    page = tab.page
    tab.sign_in(console.url, console.keys["admin"])
    assert page.get_by_role("heading", name="Dashboard").is_visible()

    page.get_by_text("New knowledge base").click()
    page.get_by_label("Name", exact=True).fill("policies")
    page.get_by_label("Title").fill("Company policies")
    page.get_by_label("Reader groups").fill("staff")
    page.get_by_label("Owner groups").fill("hr")
    page.get_by_role("button", name="Create knowledge base").click()
    page.wait_for_url(console.url + "/ui/kbs/policies")

    page.get_by_label("Kind").select_option("files")
    page.get_by_role("group", name="files options").get_by_label("Path").fill(str(docs))
    page.get_by_label("Sync schedule (optional)").fill("0 3 * * 1-5")
    page.get_by_role("button", name="Add source").click()
    assert page.get_by_role("heading", name=re.compile("files source")).is_visible()
    assert "Syncs on 0 3 * * 1-5 (UTC), next" in page.locator("#sources").inner_text()
    assert page.locator("[data-field=next-sync]").inner_text().endswith("03:00 UTC")

    page.get_by_role("button", name="Sync now").click()
    page.wait_for_url(re.compile(r".*/ui/kbs/policies\?job=\w+"))
    panel = page.locator("#job-panel")
    first_state = panel.locator("[data-job-state]").get_attribute("data-job-state")
    page.wait_for_selector('#job-panel [data-job-state="succeeded"]', timeout=90_000)
    assert "succeeded" in panel.inner_text()
    assert panel.locator(".count").inner_text() in ("3 done", "3 / 3")
    # the status panel refreshes itself when the job ends, without reloading the page
    page.wait_for_function("() => document.querySelector('[data-field=documents]').textContent.trim() === '3'")
    print(f"sync job was {first_state} when the page opened")
    page.screenshot(path=str(screenshot_path("web-admin-sync")), full_page=True)

    from kadapt.policy import decide_kb

    decision = decide_kb(console.catalog, "policies", estimates=make_estimates())
    page.goto(console.url + "/ui/kbs/policies")
    assert page.locator("[data-field=decision-mode]").inner_text() == decision.mode
    assert page.locator("[data-field=decision-headline]").inner_text().startswith(f"Served by {decision.mode}")
    page.get_by_text("The policy's reasoning, in full").click()
    assert decision.rationale.splitlines()[0] in page.locator("pre.rationale").inner_text()
    assert page.locator("[data-field=documents]").inner_text() == "3"

    page.get_by_role("link", name="Open the cost and generalization report").click()
    page.wait_for_url(console.url + "/ui/kbs/policies/report")
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name="Company policies").is_visible()
    # the accuracy requirement is drawn, and named apart from the no-documents baseline
    assert page.locator("svg text", has_text="requirement 0.60").first.is_visible()
    assert page.locator("svg text", has_text="no documents (baseline)").first.is_visible()
    charts = page.locator("svg")
    assert sum(1 for index in range(charts.count()) if charts.nth(index).is_visible()) >= 2
    page.screenshot(path=str(screenshot_path("web-admin-report")), full_page=True)

    page.goto(console.url + "/ui/")
    row = page.get_by_role("region", name="Knowledge bases").get_by_role("row").filter(has_text="policies")
    assert decision.mode in row.inner_text()
    assert row.get_by_role("link", name="Report for policies").is_visible()
    page.screenshot(path=str(screenshot_path("web-admin-dashboard")), full_page=True)
    assert tab.problems == []


# each page's key information, which must be on screen at 375 px (visible, and not cut off at either side)
KEY_INFORMATION = {
    "/ui/": [
        "[data-health]",
        "td[data-label='Active mode'] .mode",
        "td[data-label='Errors']",
        "td[data-label='Decision']",
    ],
    "/ui/kbs/handbook": ["#kb-status [data-health]", "[data-field=documents]", "[data-field=mode]", "#decision h2"],
    "/ui/kbs/handbook/documents": ["[data-field=matched]", "tr[data-status] th a", "tr[data-status] .state"],
    "/ui/jobs": ["table.cards tbody th a", "td[data-label='State'] .state"],
    "/ui/keys": ["[data-field=this-key]", "td[data-label='Status'] .state", "td[data-label='Actions'] button"],
    "/ui/kbs/handbook/report": ["main h1"],
    "/ui/chat": ["#question", "#send", "#kb"],
}


def _on_screen(page, selector: str) -> bool:
    element = page.locator(selector).first
    if not element.is_visible():
        return False
    box = element.bounding_box()
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE + 0.5


def _a_document(console) -> str:
    from sqlalchemy import select

    from kadapt.catalog import Document

    with console.catalog.session() as session:
        return session.scalar(select(Document.id).where(Document.locator.endswith("leave-policy.md")))


def test_admin_pages_fit_a_phone(console, open_tab):
    from kadapt.jobs import cancel_job, create_job
    from kadapt.kbs import get_kb

    # a job for the jobs page to list (cancelled at once: it is never run)
    job = create_job(console.catalog, "sync", kb_id=get_kb(console.catalog, "handbook").id, params={"kb": "handbook"})
    cancel_job(console.catalog, job)
    pages = KEY_INFORMATION | {
        f"/ui/jobs/{job}": ["[data-job-state]", "main h1"],
        f"/ui/kbs/handbook/documents/{_a_document(console)}": ["main h1", ".document-text"],
    }
    tab = open_tab(width=PHONE, height=800)
    page = tab.page
    page.goto(console.url + "/ui/login")
    assert tab.scroll_width() <= PHONE
    assert axe_violations(page) == []
    page.screenshot(path=str(screenshot_path("web-login-375")), full_page=True)
    tab.sign_in(console.url, console.keys["admin"])
    for path, selectors in pages.items():
        response = page.goto(console.url + path)
        assert response.status == 200, path
        page.wait_for_load_state("networkidle")
        assert tab.scroll_width() <= PHONE, f"{path} scrolls sideways at {PHONE} px"
        for selector in selectors:
            assert _on_screen(page, selector), f"{path}: {selector} is not on screen at {PHONE} px"
        name = "web-" + (path.strip("/").removeprefix("ui").strip("/").replace("/", "-") or "dashboard")[:40] + "-375"
        page.screenshot(path=str(screenshot_path(name)), full_page=True)
        assert axe_violations(page) == [], path
    # job ids stay on one line
    job_link = page.goto(console.url + "/ui/jobs") and page.locator("table.cards tbody th a").first
    box = job_link.bounding_box()
    assert box["height"] < 30, "a job id breaks over lines"
    # keyboard: the first Tab reaches the skip link, which moves focus to the page's content
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert tab.problems == []

"""The whole lifecycle in a real Chromium: an editor creates a KB, adds a files source through the form generated
from the connector's schema, syncs, runs Adapt and sees the decision appear without a reload; then lists the
documents, sets the workload and the serving mode. Who sees which action; the health badge; axe-core on the
pages."""

from __future__ import annotations

import html
import re

import pytest

from tests.browser import axe_violations, screenshot_path
from tests.web.conftest import sign_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a whole adapt, slower beside other work

DOCS = {
    "leave.md": "# Leave\n\nEmployees of Korvath Industries get 27 days of paid leave per year.\n",
    "travel.md": "# Travel\n\nTrain travel at Korvath Industries is booked in second class.\n",
    "expenses.md": "# Expenses\n\nReceipts are due within 30 days of the purchase.\n",
    "broken.pdf": "%PDF-1.4 this is not a PDF at all",
}


def test_editor_adapts_a_kb_from_the_console_and_sees_the_decision_without_a_reload(console, open_tab):
    docs = console.root / "lifecycle-docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    tab = open_tab()
    page = tab.page
    tab.sign_in(console.url, console.keys["editor_owner"])

    page.get_by_text("New knowledge base").click()
    page.get_by_label("Name", exact=True).fill("lifecycle")
    page.get_by_label("Title").fill("Korvath handbook")
    page.get_by_label("Reader groups").fill("staff")
    page.get_by_role("button", name="Create knowledge base").click()
    page.wait_for_url(console.url + "/ui/kbs/lifecycle")
    assert page.locator("#kb-status [data-health]").get_attribute("data-health") == "empty"

    # the add form shows the picked kind's options only, generated from its config schema
    page.get_by_label("Kind").select_option("git")
    assert page.get_by_role("group", name="git options").is_visible()
    assert not page.get_by_role("group", name="files options").is_visible()
    page.get_by_label("Kind").select_option("files")
    files = page.get_by_role("group", name="files options")
    files.get_by_label("Path").fill(str(docs))
    files.get_by_label("Exclude").fill("*.tmp")
    page.get_by_role("button", name="Add source").click()
    page.wait_for_url(re.compile(r".*/ui/kbs/lifecycle#sources"))
    assert page.get_by_role("heading", name=re.compile("files source")).is_visible()

    page.get_by_role("button", name="Sync now").click()
    page.wait_for_selector('#job-panel [data-job-state="succeeded"]', timeout=120_000)
    page.wait_for_function("() => document.querySelector('[data-field=documents]').textContent.trim() === '3'")
    page.reload()
    # the unreadable PDF is recorded, and the badge says so
    assert page.locator("#kb-status [data-health]").get_attribute("data-health") == "errors"
    assert "1 document could not be read" in page.locator("[data-field=health-problems]").inner_text()

    page.get_by_role("button", name="Adapt: measure and decide").click()
    page.wait_for_url(re.compile(r".*/ui/kbs/lifecycle\?job=\w+#lifecycle"))
    assert page.locator("#job-panel").get_by_text("adapt job").is_visible()
    assert "No decision yet" in page.locator("[data-field=decision-headline]").inner_text()
    page.wait_for_selector('#job-panel [data-job-state="succeeded"]', timeout=1_500_000)
    # no reload: the decision panel refreshes itself when the job ends
    page.wait_for_function(
        "() => document.querySelector('[data-field=decision-headline]').textContent.startsWith('Served by')"
    )
    # and the status panel with it: the health no longer says "never decided"
    page.wait_for_function("() => !document.querySelector('#kb-status').textContent.includes('Never decided')")
    headline = page.locator("[data-field=decision-headline]").inner_text()
    chosen = page.locator("[data-field=decision-mode]").inner_text()
    assert headline.startswith(f"Served by {chosen}")
    table = page.get_by_role("region", name="Modes weighed")
    assert table.locator("tr.chosen").get_by_text(chosen, exact=True).is_visible()
    assert {"icl", "ft", "aug-ft"} <= set(table.locator("tbody th .mode").all_inner_texts())
    page.screenshot(path=str(screenshot_path("web-lifecycle-decided")), full_page=True)
    print(f"decided: {headline}")

    # documents: searchable, with their status and the error of the one that could not be read
    page.get_by_role("link", name="Documents", exact=True).click()
    page.wait_for_url(console.url + "/ui/kbs/lifecycle/documents")
    assert page.locator("[data-field=matched]").inner_text().startswith("4 documents")
    assert page.locator("tr[data-status=error]").get_by_text("broken.pdf").is_visible()
    page.get_by_label("Search by title or path").fill("leave")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("[data-field=matched]").inner_text().startswith("1 document ")
    page.get_by_role("link", name="Leave").click()
    assert "27 days of paid leave" in page.locator("main").inner_text()

    # the workload: a measured KB is decided again at once
    page.goto(console.url + "/ui/kbs/lifecycle")
    page.locator("#workload summary").click()
    page.get_by_label("Accuracy requirement (0–1, lower 95% bound)").fill("0.99")
    page.get_by_role("button", name="Set workload").click()
    page.wait_for_url(re.compile(r".*/ui/kbs/lifecycle#decision"))
    assert "0.99" in page.locator("[data-field=decision-headline]").inner_text()

    # the serving mode: back to icl, which needs no adapter
    page.get_by_label("Serve this KB as").select_option("icl")
    page.get_by_role("button", name="Set mode").click()
    page.wait_for_url(re.compile(r".*/ui/kbs/lifecycle#lifecycle"))
    assert page.locator("[data-field=active-mode]").inner_text() == "icl"
    assert axe_violations(page) == []
    assert tab.problems == []


def test_actions_are_shown_only_to_those_who_may_use_them(console, open_tab):
    tab = open_tab()
    page = tab.page
    tab.sign_in(console.url, console.keys["editor_reader"])  # an editor who reads the handbook, owns nothing
    page.goto(console.url + "/ui/kbs/handbook")
    assert page.get_by_role("heading", name="Decision").is_visible()
    for button in ("Sync now", "Adapt: measure and decide", "Train adapter", "Set mode", "Add source"):
        assert page.get_by_role("button", name=button).count() == 0, button
    assert page.locator("#workload").count() == 0
    assert tab.problems == []
    tab = open_tab()
    page = tab.page
    tab.sign_in(console.url, console.keys["editor_owner"])
    page.goto(console.url + "/ui/kbs/handbook")
    for button in ("Sync now", "Adapt: measure and decide", "Train adapter", "Set mode", "Add source"):
        assert page.get_by_role("button", name=button).is_visible(), button
    # a fine-tuned mode is offered only once an adapter of it is ready
    assert page.locator("#serve-mode option[value=ft]").is_disabled()
    assert tab.problems == []


def test_a_bad_workload_or_mode_gets_a_message_that_names_it(console):
    admin = sign_in(console.url, console.keys["admin"])
    response = admin.form("/ui/kbs/handbook/workload", {"queries_per_day": "lots"}, headers={"Accept": "text/html"})
    assert response.status_code == 400
    assert "queries per day: 'lots' is not a number" in html.unescape(response.text)
    response = admin.form("/ui/kbs/handbook/mode", {"mode": "ft"}, headers={"Accept": "text/html"})
    assert response.status_code in (400, 409), response.text[:500]
    assert "adapter" in response.text
    # an emptied budget field removes the budget
    from kadapt.kbs import get_kb

    assert admin.form("/ui/kbs/handbook/workload", {"budget_usd": "5"}).status_code == 303
    assert get_kb(console.catalog, "handbook").workload["budget_usd"] == 5
    assert admin.form("/ui/kbs/handbook/workload", {"budget_usd": ""}).status_code == 303
    assert get_kb(console.catalog, "handbook").workload.get("budget_usd") is None
    response = admin.form("/ui/kbs/handbook/train", {"mode": "icl"}, headers={"Accept": "text/html"})
    assert response.status_code == 400
    assert "train: mode must be one of ft, aug-ft, not 'icl'" in html.unescape(response.text)

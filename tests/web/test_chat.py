"""A reader in a real Chromium at phone width: asks the handbook, sees the answer stream in with its sources,
opens a source, and cannot reach a KB outside their groups."""

from __future__ import annotations

from tests.browser import screenshot_path

PHONE = 375


def test_reader_chats_with_a_streamed_answer_and_sources(console, open_tab):
    tab = open_tab(width=PHONE, height=900)
    page = tab.page
    tab.sign_in(console.url, console.keys["reader_member"])
    assert page.url == console.url + "/ui/chat"
    picker = page.get_by_label("Knowledge base")
    options = picker.locator("option").evaluate_all("options => options.map(option => option.value)")
    assert "handbook" in options and "finance" not in options  # finance is read by another group

    # the question the API's tests ask (tests/api/test_openai_clients.py); asked "... do I get?", the embedded
    # model answers wrongly from the same documents ("based on the number of days you have taken")
    page.get_by_label("Your question").fill("How many days of paid annual leave does a full-time employee get?")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".turn .answer")
    page.wait_for_function("() => Number(document.querySelector('.turn .answer')?.dataset.chunks) > 0")
    page.wait_for_selector(".turn[data-done]", timeout=180_000)
    assert page.locator(".turn").get_attribute("data-done") == "ok", page.locator(".turn").inner_text()
    assert "27" in answer.inner_text(), answer.inner_text()  # the leave policy's 27 days
    assert int(answer.get_attribute("data-chunks")) > 1  # it arrived in pieces, as the model wrote it
    sources = page.locator(".turn .sources a")
    assert sources.count() >= 1
    assert tab.scroll_width() <= PHONE
    page.screenshot(path=str(screenshot_path("web-reader-chat")), full_page=True)

    title = sources.first.inner_text()
    sources.first.click()
    page.wait_for_url("**/ui/kbs/handbook/documents/*")
    assert page.get_by_role("heading", level=1).inner_text() == title
    assert page.locator("pre.document-text").inner_text().strip()
    assert tab.scroll_width() <= PHONE
    page.screenshot(path=str(screenshot_path("web-reader-document")), full_page=True)
    assert tab.problems == []

    messages = []
    for path in ("/ui/kbs/finance/report", "/ui/kbs/finance/documents/x", "/ui/kbs/no-such-kb/report"):
        response = page.goto(console.url + path)
        assert response.status == 404, path
        assert page.get_by_role("heading", name="Not found").is_visible()
        messages.append(page.get_by_role("alert").inner_text().replace("finance", "KB").replace("no-such-kb", "KB"))
    assert messages[0] == messages[2]  # a KB of another group looks exactly like one that does not exist
    page.screenshot(path=str(screenshot_path("web-reader-404")), full_page=True)
    response = page.goto(console.url + "/ui/kbs/handbook")
    assert response.status == 403  # the KB's admin page, not its chat
    # Chromium reports the error status of each of those pages in the console, and nothing else
    assert tab.problems == [
        *["console: Failed to load resource: the server responded with a status of 404 (Not Found)"] * 3,
        "console: Failed to load resource: the server responded with a status of 403 (Forbidden)",
    ]

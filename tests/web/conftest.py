"""A live ``kadapt serve`` for the web console tests, with keys for each role, and a real Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import PRINCIPALS, REPO, HandbookServer, handbook_server

Console = HandbookServer  # the console's tests use its url, keys, root (allowed for sources), catalog, settings
# the console's Adapt button runs the whole loop for real, on a handful of documents: short trainings and the
# model-free reversal augmenter keep it to a few minutes
QUICK_ADAPT = {
    "KADAPT_ADAPT_EPOCHS": "2",
    "KADAPT_ADAPT_AUGMENTERS": "reverse",
}


@pytest.fixture(scope="package")
def console(tmp_path_factory) -> Iterator[Console]:
    def finance(catalog, _settings) -> None:
        from kadapt.kbs import create_kb

        create_kb(catalog, "finance", title="Finance playbook", reader_groups=["sales"], owner_groups=["sales"])

    root = tmp_path_factory.mktemp("console")
    with handbook_server(
        root, PRINCIPALS, allowed_roots=[root, REPO / "samples"], setup=finance, settings=QUICK_ADAPT
    ) as console:
        yield console


# -- signing in without a browser ---------------------------------------------------------------------------

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@dataclass
class Session:
    """An httpx client holding a console session cookie, and the session's CSRF token."""

    client: httpx.Client
    csrf: str = ""

    def form(self, path: str, data: dict[str, str] | None = None, **kwargs) -> httpx.Response:
        return self.client.post(path, data={"csrf_token": self.csrf} | (data or {}), **kwargs)


def login_form(client: httpx.Client) -> str:
    """Open the sign-in page; return the form's CSRF token (the session cookie is now in the client)."""
    page = client.get("/ui/login")
    assert page.status_code == 200, page.text
    return CSRF_INPUT.search(page.text).group(1)


def sign_in(url: str, key: str) -> Session:
    client = httpx.Client(base_url=url, timeout=120, follow_redirects=False)
    response = client.post("/ui/login", data={"csrf_token": login_form(client), "api_key": key})
    assert response.status_code == 303, response.text
    chat = client.get("/ui/chat")
    assert chat.status_code == 200, chat.text
    return Session(client, CSRF_META.search(chat.text).group(1))


# -- a real browser -----------------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser():
    from tests.browser import require_chromium

    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox.
        chromium = playwright.chromium.launch(executable_path=str(executable), headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Tab:
    """A page in its own browser context (its own cookies), recording every console error, uncaught
    exception and failed request on every page it visits."""

    page: object
    problems: list[str] = field(default_factory=list)

    def sign_in(self, url: str, key: str) -> None:
        self.page.goto(url + "/ui/login")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(r".*/ui/(chat)?$"))

    def scroll_width(self) -> int:
        return self.page.evaluate("document.documentElement.scrollWidth")


@pytest.fixture
def open_tab(browser):
    contexts = []

    def open_(width: int = 1280, height: int = 900) -> Tab:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        tab = Tab(page)
        page.on("console", lambda message: message.type == "error" and tab.problems.append(f"console: {message.text}"))
        page.on("pageerror", lambda error: tab.problems.append(f"page error: {error}"))
        page.on(
            "requestfailed",
            # a poll still in flight when the page navigates away is aborted by the browser, not failed
            lambda request: (
                "ERR_ABORTED" not in (request.failure or "")
                and tab.problems.append(f"request failed: {request.url}: {request.failure}")
            ),
        )
        return tab

    yield open_
    for context in contexts:
        context.close()

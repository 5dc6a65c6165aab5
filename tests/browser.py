"""A real Chromium for tests of the web pages: Playwright driving Debian's ``chromium`` package.

Tests call :func:`open_page`; it fails the test with the install command when Chromium is missing,
unless ``KADAPT_SKIP_BROWSER=1`` asks to skip browser tests on a machine that cannot have one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("KADAPT_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("KADAPT_TEST_SCREENSHOTS", REPO / ".kadapt" / "screenshots"))
INSTALL_HINT = (
    "install Debian's chromium (`apt-get install -y chromium`, as .ci/run does), point KADAPT_TEST_CHROMIUM "
    "at another Chromium, or set KADAPT_SKIP_BROWSER=1 to skip the browser tests"
)


@dataclass
class PageResult:
    """What a user would have seen and what the browser complained about while loading one page."""

    url: str
    status: int | None
    title: str
    text: str
    svg_count: int
    scroll_width: int
    screenshot: Path
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every console error, uncaught exception and failed request, for one readable assertion."""
        return self.console_errors + self.page_errors + self.failed_requests


def require_chromium() -> Path:
    """The Chromium executable; skips the test when ``KADAPT_SKIP_BROWSER=1``, fails when it is missing."""
    if os.environ.get("KADAPT_SKIP_BROWSER") == "1":
        pytest.skip("KADAPT_SKIP_BROWSER=1")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: {INSTALL_HINT}", pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail('Playwright is missing: pip install -e ".[dev]"', pytrace=False)
    return CHROMIUM


def screenshot_path(name: str) -> Path:
    """A file under ``.kadapt/screenshots/`` (or ``KADAPT_TEST_SCREENSHOTS``) named after ``name``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") + ".png")


def open_page(
    url: str,
    screenshot: Path,
    *,
    width: int = 1280,
    height: int = 800,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30,
) -> PageResult:
    """Load ``url`` in a fresh headless Chromium at ``width`` px, take a full-page screenshot, report.

    ``headers`` are sent with every request (an ``Authorization`` header, for instance). The browser
    is closed before this returns.
    """
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    console_errors: list[str] = []
    page_errors: list[str] = []
    failed_requests: list[str] = []
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox.
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, extra_http_headers=headers)
            page = context.new_page()
            page.set_default_timeout(timeout_s * 1000)
            page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("requestfailed", lambda request: failed_requests.append(f"{request.url}: {request.failure}"))
            response = page.goto(url, wait_until="load")
            page.wait_for_load_state("networkidle")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"screenshot of {url} at {width} px: {screenshot}")
            svgs = page.locator("svg")
            result = PageResult(
                url=url,
                status=response.status if response is not None else None,
                title=page.title(),
                text=page.inner_text("body"),
                svg_count=sum(1 for index in range(svgs.count()) if svgs.nth(index).is_visible()),
                scroll_width=page.evaluate("document.documentElement.scrollWidth"),
                screenshot=screenshot,
                console_errors=console_errors,
                page_errors=page_errors,
                failed_requests=failed_requests,
            )
        finally:
            browser.close()
    return result


AXE = REPO / "deploy" / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


def axe_violations(page) -> list[str]:
    """axe-core's serious and critical accessibility violations on the page as it is now, one line each (rule,
    impact, the first offending elements). axe-core comes from npm (`npm ci --prefix deploy`, as `make install`
    runs it); it is evaluated in the page through the DevTools protocol, which the page's CSP does not govern."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `npm ci --prefix deploy` (make install does)")
    page.evaluate(AXE.read_text())
    violations = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations.map(v => ({id: v.id, "
        "impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"
    )
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} at {', '.join(violation['nodes'])}"
        for violation in violations
        if violation["impact"] in SERIOUS
    ]

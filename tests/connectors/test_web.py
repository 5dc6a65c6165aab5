from __future__ import annotations

import pytest

from kadapt.connectors import ListingIncomplete, LoadFailure
from kadapt.errors import PermissionDenied
from kadapt_web import WebConnector, check_public_host
from tests.connectors.conformance import ConnectorConformance, SourceUnderTest, documents, load
from tests.connectors.webserver import Site


@pytest.fixture
def site(kadapt_env, monkeypatch):
    monkeypatch.setenv("KADAPT_ALLOW_PRIVATE_NETWORKS", "true")
    from kadapt.settings import get_settings

    get_settings.cache_clear()
    with Site() as running:
        running.html(
            "/",
            "Intranet",
            '<a href="/hr">HR</a> <a href="/it#top">IT</a> <a href="https://example.com/">x</a>'
            "<p>Welcome to the intranet.</p>",
        )
        running.html("/hr", "HR", '<p>Leave requests go through Workday.</p><a href="/hr/deep">deeper</a>')
        running.html("/hr/deep", "Deep", '<p>Deep page.</p><a href="/hr/deeper">deeper</a>')
        running.html("/hr/deeper", "Deeper", "<p>Too deep for depth 2.</p>")
        running.html("/it", "IT", "<p>The service desk answers at extension 199.</p>")
        running.raw("/robots.txt", "text/plain", b"User-agent: *\nDisallow: /private\n")
        yield running


class TestWebConformance(ConnectorConformance):
    @pytest.fixture
    def source(self, kadapt_env, site):
        def change():
            site.html("/it", "IT", "<p>The service desk moved to extension 200.</p>")
            return f"{site.base}/it"

        def remove():
            site.html("/", "Intranet", '<a href="/hr">HR</a> <a href="/it">IT</a><p>Welcome.</p>')
            site.html("/hr", "HR", "<p>Leave requests go through Workday.</p>")
            return f"{site.base}/hr/deep"

        def break_one():
            site.html("/it", "IT", "gone", status=500)
            return f"{site.base}/it"

        def make_unavailable():
            site.html("/", "Down", "<p>Service unavailable</p>", status=503)

        return SourceUnderTest(
            WebConnector,
            {"url": site.base + "/", "max_depth": 2},
            kadapt_env / "w",
            change,
            remove,
            break_one,
            make_unavailable,
        )


def test_same_host_depth_and_robots(kadapt_env, site):
    site.html(
        "/",
        "Intranet",
        '<a href="/hr">HR</a> <a href="/private/salaries">secret</a>'
        f'<a href="http://localhost:{site.server.server_address[1]}/other-host">other</a>',
    )
    site.html("/private/salaries", "Salaries", "<p>secret</p>")
    source = SourceUnderTest(WebConnector, {"url": site.base + "/", "max_depth": 2}, kadapt_env / "w", None, None, None)
    loaded = documents(load(source))
    assert set(loaded) == {f"{site.base}/", f"{site.base}/hr", f"{site.base}/hr/deep"}
    assert "/private/salaries" not in site.requests  # robots.txt respected
    assert "/other-host" not in site.requests


def test_page_limit(kadapt_env, site):
    source = SourceUnderTest(WebConnector, {"url": site.base + "/", "max_pages": 2}, kadapt_env / "w", None, None, None)
    assert len(documents(load(source))) == 2


def test_sitemap(kadapt_env, site):
    sitemap = (
        f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<url><loc>{site.base}/it</loc></url><url><loc>{site.base}/hr/deeper</loc></url>"
        "<url><loc>https://example.com/elsewhere</loc></url></urlset>"
    )
    site.raw("/sitemap.xml", "application/xml", sitemap.encode())
    source = SourceUnderTest(WebConnector, {"sitemap": site.base + "/sitemap.xml"}, kadapt_env / "w", None, None, None)
    assert set(documents(load(source))) == {f"{site.base}/it", f"{site.base}/hr/deeper"}


def test_unreachable_pages_are_failures_gone_pages_are_not_listed_and_the_rest_loads(kadapt_env, site):
    site.html("/", "Intranet", '<a href="/drop">dropped</a> <a href="/missing">missing</a> <a href="/it">IT</a>')
    items = load(SourceUnderTest(WebConnector, {"url": site.base + "/"}, kadapt_env / "w", None, None, None))
    failures = {item.locator: item.message for item in items if isinstance(item, LoadFailure)}
    assert set(failures) == {f"{site.base}/drop"}  # kept at its last good version
    assert "could not fetch" in failures[f"{site.base}/drop"]
    # /drop's links are unknown: the listing says so, and a sync then deletes nothing
    reasons = [item.reason for item in items if isinstance(item, ListingIncomplete)]
    assert len(reasons) == 1 and f"{site.base}/drop failed" in reasons[0]
    assert set(documents(items)) == {f"{site.base}/", f"{site.base}/it"}  # /missing (404) is not listed


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://localhost/",
    ],
)
def test_private_and_loopback_addresses_are_refused_before_connecting(url):
    with pytest.raises(PermissionDenied, match="KADAPT_ALLOW_PRIVATE_NETWORKS"):
        check_public_host(url, allow_private=False)


def test_loopback_crawl_is_refused_end_to_end_without_the_setting(kadapt_env):
    with Site() as running:
        running.html("/", "Home", "<p>hello</p>")
        source = SourceUnderTest(WebConnector, {"url": running.base + "/"}, kadapt_env / "w", None, None, None)
        with pytest.raises(PermissionDenied):
            load(source)
        assert running.requests == []


def test_unreachable_page_is_a_document_error_in_a_kb_sync(kadapt_env, site, catalog, store):
    from kadapt.kbs import add_source, create_kb, get_kb, kb_status
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    site.html("/", "Intranet", '<a href="/drop">dropped</a> <a href="/it">IT</a>')
    create_kb(catalog, "intranet")
    add_source(catalog, get_settings(), "intranet", "web", {"url": site.base + "/"})
    stats = sync_kb(catalog, "intranet")
    assert stats.added == 2 and stats.failed == 1
    status = kb_status(catalog, store, "intranet")
    assert [error["locator"] for error in status["errors"]] == [f"{site.base}/drop"]
    assert store.search(get_kb(catalog, "intranet"), "service desk extension", k=1)[0].locator == f"{site.base}/it"


def test_an_unchanged_page_costs_one_304_and_the_links_it_had_are_still_followed(kadapt_env, site, catalog, store):
    from sqlalchemy import select

    from kadapt.catalog import Document
    from kadapt.kbs import add_source, create_kb, get_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    site.etags = True
    create_kb(catalog, "intranet")
    add_source(catalog, get_settings(), "intranet", "web", {"url": site.base + "/"})
    first = sync_kb(catalog, "intranet")
    pages = {"/", "/hr", "/hr/deep", "/hr/deeper", "/it"}
    assert first.added == 5 and {path for path, status in site.answers if status == 200} == pages | {"/robots.txt"}

    site.answers.clear()
    site.html("/it", "IT", "<p>The service desk moved to extension 200.</p>")
    second = sync_kb(catalog, "intranet")

    # every unchanged page answered 304 (no body sent); the pages reached only through their links were still
    # reached, so nothing left the KB; the changed page was read in full (and robots.txt, read at every sync)
    read = [("/it", 200), ("/robots.txt", 200)]
    assert sorted(site.answers) == sorted([(path, 304) for path in pages - {"/it"}] + read), site.answers
    assert (second.skipped_unread, second.updated, second.deleted, second.added) == (4, 1, 0, 0)
    with catalog.session() as session:
        held = set(session.scalars(select(Document.locator)))
    assert held == {site.base + path for path in pages}
    hit = store.search(get_kb(catalog, "intranet"), "service desk extension", k=1)[0]
    assert (hit.locator, "extension 200" in hit.text) == (f"{site.base}/it", True)


def test_a_validator_that_cannot_be_sent_back_is_not_kept(kadapt_env, site, catalog):
    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    site.etags, site.etag_text = True, '"caf\xe9"'  # out of ASCII: httpx could not send it in If-None-Match
    create_kb(catalog, "intranet")
    add_source(catalog, get_settings(), "intranet", "web", {"url": site.base + "/"})
    assert sync_kb(catalog, "intranet").added == 5
    site.answers.clear()
    again = sync_kb(catalog, "intranet")  # every page read in full, no sync broken
    assert (again.unchanged, again.failed, again.source_errors) == (5, 0, [])
    assert {status for _, status in site.answers} == {200}

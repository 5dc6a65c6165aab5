"""Sitemaps are bounded (finding 5): nesting past two levels and entries past KADAPT_MAX_SITEMAP_URLS are left
out as document errors, the listing is reported incomplete (so a sync deletes nothing), and the rest loads."""

from __future__ import annotations

import pytest

from kadapt.connectors import ListingIncomplete, LoadFailure
from kadapt_web import WebConnector
from tests.connectors.conformance import SourceUnderTest, documents, load
from tests.connectors.webserver import Site

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


@pytest.fixture
def site(kadapt_env, monkeypatch):
    monkeypatch.setenv("KADAPT_ALLOW_PRIVATE_NETWORKS", "true")
    from kadapt.settings import get_settings

    get_settings.cache_clear()
    with Site() as running:
        running.raw("/robots.txt", "text/plain", b"User-agent: *\n")
        for number in range(10):
            running.html(f"/page{number}", f"Page {number}", f"<p>Page number {number} of the handbook.</p>")
        yield running


def urlset(site: Site, path: str, pages: list[int]) -> None:
    entries = "".join(f"<url><loc>{site.base}/page{number}</loc></url>" for number in pages)
    site.raw(path, "application/xml", f'<?xml version="1.0"?><urlset {NS}>{entries}</urlset>'.encode())


def index(site: Site, path: str, sitemaps: list[str]) -> None:
    entries = "".join(f"<sitemap><loc>{site.base}{nested}</loc></sitemap>" for nested in sitemaps)
    site.raw(path, "application/xml", f'<?xml version="1.0"?><sitemapindex {NS}>{entries}</sitemapindex>'.encode())


def crawl(kadapt_env, site: Site, sitemap: str):
    source = SourceUnderTest(WebConnector, {"sitemap": site.base + sitemap}, kadapt_env / "w", None, None, None)
    items = load(source)
    failures = {item.locator: item.message for item in items if isinstance(item, LoadFailure)}
    incomplete = [item.reason for item in items if isinstance(item, ListingIncomplete)]
    pages = {locator.removeprefix(site.base) for locator in documents(items)}
    return pages, failures, incomplete


def test_sitemaps_nested_too_deep_are_document_errors(kadapt_env, site):
    index(site, "/sitemap.xml", ["/one.xml", "/deep1.xml"])
    urlset(site, "/one.xml", [0, 1])
    index(site, "/deep1.xml", ["/deep2.xml"])
    index(site, "/deep2.xml", ["/deep3.xml"])  # depth 2 may list sitemaps, which are not read
    urlset(site, "/deep3.xml", [2])
    pages, failures, incomplete = crawl(kadapt_env, site, "/sitemap.xml")
    assert pages == {"/page0", "/page1"}
    assert set(failures) == {site.base + "/deep3.xml"}
    assert "nested more than 2 levels" in failures[site.base + "/deep3.xml"] and incomplete
    assert "/deep3.xml" not in site.requests


def test_sitemap_entries_past_the_limit_are_left_out(kadapt_env, site, monkeypatch):
    from kadapt.settings import get_settings

    monkeypatch.setenv("KADAPT_MAX_SITEMAP_URLS", "5")
    get_settings.cache_clear()
    urlset(site, "/sitemap.xml", list(range(8)))
    pages, failures, incomplete = crawl(kadapt_env, site, "/sitemap.xml")
    assert pages == {f"/page{number}" for number in range(5)}
    assert "KADAPT_MAX_SITEMAP_URLS" in failures[site.base + "/sitemap.xml"] and incomplete


def test_an_index_of_many_sitemaps_is_read_only_up_to_the_limit(kadapt_env, site, monkeypatch):
    from kadapt.settings import get_settings

    monkeypatch.setenv("KADAPT_MAX_SITEMAP_URLS", "4")
    get_settings.cache_clear()
    index(site, "/sitemap.xml", [f"/part{number}.xml" for number in range(10)])
    for number in range(10):
        urlset(site, f"/part{number}.xml", [number])
    pages, failures, incomplete = crawl(kadapt_env, site, "/sitemap.xml")
    # the index's own entries use up the limit of 4 (every <loc> counts): no nested sitemap is fetched
    assert pages == set() and not any(path.startswith("/part") for path in site.requests)
    assert "KADAPT_MAX_SITEMAP_URLS" in failures[site.base + "/sitemap.xml"] and incomplete
    assert "KADAPT_MAX_SITEMAP_URLS" in failures[site.base + "/part0.xml"]

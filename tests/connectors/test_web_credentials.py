"""Web sources behind a sign-in: per-host credentials (headers, cookies, basic auth) from a file the operator
keeps (KADAPT_WEB_CREDENTIALS, or a group's ``web_credentials``), sent only to that host, never stored or shown."""

from __future__ import annotations

import base64
import json

import pytest

from kadapt.allowances import source_allowances
from kadapt.errors import ConfigError
from kadapt.settings import Settings, get_settings
from kadapt_web import host_credentials
from tests.connectors.webserver import Site

TOKEN = "Bearer tok-7f3a9c1e"


@pytest.fixture
def site(kadapt_env, monkeypatch):
    monkeypatch.setenv("KADAPT_ALLOW_PRIVATE_NETWORKS", "true")
    get_settings.cache_clear()
    with Site() as running:
        running.html("/", "Intranet", '<a href="/hr">HR</a><p>Welcome to the intranet.</p>')
        running.html("/hr", "HR", "<p>Leave requests go through Workday.</p>")
        yield running


def credentials_file(kadapt_env, monkeypatch, entries: dict) -> None:
    path = kadapt_env / "secrets" / "web.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(entries))
    monkeypatch.setenv("KADAPT_WEB_CREDENTIALS", str(path))
    get_settings.cache_clear()


def sync_intranet(catalog, site):
    from kadapt.kbs import add_source, create_kb, kb_status
    from kadapt.sync import sync_kb

    create_kb(catalog, "intranet")
    add_source(catalog, get_settings(), "intranet", "web", {"url": site.base + "/"})
    return sync_kb(catalog, "intranet"), kb_status


def host(site) -> str:
    return site.base.removeprefix("http://")


def entry_name(site) -> str:
    """The credentials entry of the test server: plain http needs its scheme in the name (https needs none)."""
    return site.base


def test_a_page_behind_a_sign_in_is_an_error_without_credentials(kadapt_env, site, catalog, store):
    site.required = {"Authorization": TOKEN}
    stats, _ = sync_intranet(catalog, site)
    assert stats.added == 0
    [error] = stats.source_errors  # robots.txt asked for a sign-in too, so no page was crawled
    assert f"HTTP 401 from {site.base}/robots.txt (the site asks for a sign-in" in error
    assert f"credentials for {host(site)} to KADAPT_WEB_CREDENTIALS" in error


@pytest.mark.parametrize("kind", ["header", "cookie", "basic"])
def test_the_hosts_credentials_sign_the_crawl_in(kadapt_env, site, catalog, store, monkeypatch, kind):
    entry, required = {
        "header": ({"headers": {"Authorization": TOKEN}}, {"Authorization": TOKEN}),
        "cookie": ({"cookies": {"session": "c0ffee"}}, {"Cookie": "session=c0ffee"}),
        "basic": (
            {"basic": {"username": "kadapt", "password": "pa55"}},
            {"Authorization": "Basic " + base64.b64encode(b"kadapt:pa55").decode()},
        ),
    }[kind]
    site.required = required
    credentials_file(
        kadapt_env, monkeypatch, {"other.example:443": {"headers": {"X-Other": "1"}}, entry_name(site): entry}
    )
    stats, kb_status = sync_intranet(catalog, site)
    assert (stats.added, stats.failed) == (2, 0)
    assert {path for path, status in site.answers} == {"/robots.txt", "/", "/hr"}
    assert all("X-Other" not in headers for headers in site.seen_headers)  # another host's entry is not sent
    from kadapt.kbs import get_kb

    assert store.search(get_kb(catalog, "intranet"), "how to request leave", k=1)[0].locator == f"{site.base}/hr"
    with catalog.session() as session:  # the source's config and state hold no credential
        from kadapt.catalog import Source

        stored = json.dumps([(row.config, row.state) for row in session.query(Source)])
    assert "tok-7f3a9c1e" not in stored and "c0ffee" not in stored and "pa55" not in stored


def test_credentials_named_by_host_alone_are_not_sent_in_clear(kadapt_env, site, catalog, monkeypatch):
    site.required = {"Authorization": TOKEN}
    credentials_file(kadapt_env, monkeypatch, {host(site): {"headers": {"Authorization": TOKEN}}})
    stats, _ = sync_intranet(catalog, site)
    assert stats.added == 0 and "HTTP 401" in stats.source_errors[0]
    assert all("Authorization" not in headers for headers in site.seen_headers)


def test_a_malformed_credentials_file_fails_the_sync_without_showing_a_secret(
    kadapt_env, site, catalog, store, monkeypatch
):
    credentials_file(
        kadapt_env, monkeypatch, {entry_name(site): {"headers": {"Authorization": "Bearer x\r\nX-Evil: 1"}}}
    )
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    create_kb(catalog, "intranet")
    add_source(catalog, get_settings(), "intranet", "web", {"url": site.base + "/"})
    [error] = sync_kb(catalog, "intranet").source_errors
    assert (
        f"the entry for {entry_name(site)} in the web credentials file" in error
        and "the value of 'Authorization' holds a control or non-ASCII character" in error
    )
    assert "Bearer x" not in error and "X-Evil" not in error
    assert site.requests == []  # nothing was fetched
    with pytest.raises(ConfigError, match="is not valid: Expecting value"):
        (kadapt_env / "secrets" / "web.json").write_text("not json, Bearer y")
        host_credentials((kadapt_env / "secrets" / "web.json",), "http", host(site))


def test_credentials_files_are_per_group_and_kept_from_every_source(tmp_path):
    files = {name: tmp_path / f"{name}.json" for name in ("admin", "hr", "it")}
    for path in files.values():
        path.write_text(json.dumps({"wiki.corp:8443": {"headers": {"Authorization": f"Bearer {path.stem}"}}}))
    settings = Settings(
        data_dir=tmp_path / "data",
        allowed_roots=[tmp_path],
        web_credentials=files["admin"],
        group_allowances={"hr": {"roots": [str(tmp_path)], "web_credentials": str(files["hr"])}, "it": {}},
    )
    assert source_allowances(settings).web_credentials == (files["admin"],)
    assert source_allowances(settings, ["hr"]).web_credentials == (files["hr"],)
    assert source_allowances(settings, ["it"]).web_credentials == ()  # never the admin's nor another group's
    hr = source_allowances(settings, ["hr"]).web_credentials
    found = host_credentials(hr, "https", "WIKI.corp:8443")
    assert found is not None and found.headers == {"Authorization": "Bearer hr"}
    assert host_credentials(hr, "https", "wiki.corp") is None  # the port differs
    assert host_credentials(hr, "http", "wiki.corp:8443") is None  # an entry by host alone is for https only
    # a files source over the folder that holds them does not read them
    for groups in ([], ["hr"]):
        allowances = source_allowances(settings, groups)
        assert not allowances.readable(files["admin"]) and not allowances.readable(files["hr"])

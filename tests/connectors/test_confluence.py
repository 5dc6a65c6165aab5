"""The confluence connector against a Confluence REST API on 127.0.0.1 that answers in the vendor's documented
JSON shapes (tests/connectors/confluence_server.py): conformance, spaces and page trees, pagination, incremental
syncs that read only changed pages (seen in the server's log), deletions, 429 with Retry-After, an expired
token and an outage that delete nothing."""

from __future__ import annotations

import io
import json

import pytest

from kadapt.connectors import ConnectorContext, validate_config
from kadapt.errors import InvalidInput, KadaptError
from kadapt.settings import get_settings
from kadapt_confluence import ConfluenceConfig, ConfluenceConnector
from tests.connectors.confluence_server import Confluence
from tests.connectors.conformance import ConnectorConformance, SourceUnderTest, documents, load

TOKEN = "pat-4c1d7e"


def docx(text: str) -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@pytest.fixture
def wiki(kadapt_env, monkeypatch):
    monkeypatch.setenv("KADAPT_ALLOW_PRIVATE_NETWORKS", "true")  # the server is on 127.0.0.1
    with Confluence(TOKEN) as server:
        secrets = kadapt_env / "secrets" / "web.json"
        secrets.parent.mkdir()
        origin = server.site.removesuffix("/wiki")  # plain http: the entry is named with its scheme
        secrets.write_text(json.dumps({origin: {"headers": {"Authorization": f"Bearer {TOKEN}"}}}))
        monkeypatch.setenv("KADAPT_WEB_CREDENTIALS", str(secrets))
        get_settings.cache_clear()
        leave = server.add_page("HR", "Leave", "<h1>Leave</h1><p>Leave requests go through <b>Workday</b>.</p>")
        travel = server.add_page("HR", "Travel", "<p>Book trains for trips under 500 km.</p>", parent=leave.id)
        server.add_page(
            "HR",
            "Service desk",
            '<p>The service desk answers at extension 199.</p><ac:structured-macro ac:name="info">'
            "<ac:rich-text-body><p>Open 8 to 18.</p></ac:rich-text-body></ac:structured-macro>",
            parent=travel.id,
        )
        server.attach(leave, "expenses.docx", docx("Receipts are due within 27 days."))
        server.add_page("IT", "VPN", "<p>The VPN client is WireGuard.</p>")
        yield server


def page(wiki, title):
    return next(page for page in wiki.pages.values() if page.title == title)


class TestConfluenceConformance(ConnectorConformance):
    @pytest.fixture
    def source(self, kadapt_env, wiki):
        def change():
            wiki.edit(page(wiki, "Service desk"), "<p>The service desk moved to extension 200.</p>")
            return f"pages/{page(wiki, 'Service desk').id}"

        def remove():
            removed = wiki.pages.pop(page(wiki, "Service desk").id)
            return f"pages/{removed.id}"

        def break_one():
            leave = page(wiki, "Leave")
            [attachment] = leave.attachments
            leave.attachments[attachment] = ("expenses.docx", b"not a zip archive", 2)
            return f"attachments/{attachment}"

        def make_unavailable():
            wiki.down = True

        config = {"url": wiki.site, "space": "HR"}
        return SourceUnderTest(
            ConfluenceConnector, config, kadapt_env / "w", change, remove, break_one, make_unavailable
        )


def test_a_space_syncs_pages_and_attachments_then_reads_only_what_changed(kadapt_env, wiki, catalog, store):
    from kadapt.kbs import add_source, create_kb, get_kb
    from kadapt.sync import sync_kb

    create_kb(catalog, "hr")
    add_source(catalog, get_settings(), "hr", "confluence", {"url": wiki.site, "space": "HR"})
    first = sync_kb(catalog, "hr")
    assert (first.added, first.failed, first.source_errors) == (4, 0, [])
    hr_pages = sorted(p.id for p in wiki.pages.values() if p.space == "HR")
    assert wiki.reads() == sorted([*hr_pages, "expenses.docx"])
    listings = [path for path, _ in wiki.log if path.startswith("/wiki/rest/api/content?")]
    assert len(listings) == 2  # three pages, two a page: the next link was followed
    kb = get_kb(catalog, "hr")
    hit = store.search(kb, "When are receipts due?", k=1)[0]
    assert "27 days" in hit.text
    hit = store.search(kb, "service desk opening hours", k=1)[0]
    assert "Open 8 to 18" in hit.text and "ac:" not in hit.text  # the macro's text, not its markup

    wiki.log.clear()
    second = sync_kb(catalog, "hr")
    assert (second.skipped_unread, second.added, second.updated, second.deleted) == (4, 0, 0, 0)
    assert wiki.reads() == []

    desk, travel = page(wiki, "Service desk"), page(wiki, "Travel")
    wiki.edit(desk, "<p>The service desk moved to extension 200.</p>")
    del wiki.pages[travel.id]
    wiki.log.clear()
    third = sync_kb(catalog, "hr")
    assert wiki.reads() == [desk.id]
    assert (third.skipped_unread, third.updated, third.deleted) == (2, 1, 1)
    assert "extension 200" in store.search(kb, "service desk extension", k=1)[0].text
    assert all("Book trains" not in hit.text for hit in store.search(kb, "trains trips", k=5))


def test_a_page_tree_reads_the_root_and_every_page_below_it(kadapt_env, wiki):
    travel = page(wiki, "Travel")
    source = SourceUnderTest(ConfluenceConnector, {"url": wiki.site, "root_page": travel.id}, kadapt_env, str, str, str)
    loaded = documents(load(source))
    assert {document.metadata["title"] for document in loaded.values()} == {"Travel", "Service desk"}
    assert loaded[f"pages/{travel.id}"].metadata["url"] == f"{wiki.site}/spaces/HR/pages/{travel.id}"


def test_rate_limits_are_waited_out_and_the_sync_completes(kadapt_env, wiki, catalog):
    from kadapt.kbs import add_source, create_kb
    from kadapt.sync import sync_kb

    create_kb(catalog, "hr")
    add_source(catalog, get_settings(), "hr", "confluence", {"url": wiki.site, "space": "HR"})
    wiki.throttle = 2
    stats = sync_kb(catalog, "hr")
    assert (stats.added, stats.failed, stats.source_errors) == (4, 0, [])
    assert [status for _, status in wiki.log[:3]] == [429, 429, 200]


def test_an_expired_token_or_an_outage_fails_the_sync_and_deletes_nothing(kadapt_env, wiki, catalog, store):
    from kadapt.kbs import add_source, create_kb, kb_status
    from kadapt.sync import sync_kb

    create_kb(catalog, "hr")
    add_source(catalog, get_settings(), "hr", "confluence", {"url": wiki.site, "space": "HR"})
    assert sync_kb(catalog, "hr").added == 4
    wiki.expired = True
    stats = sync_kb(catalog, "hr")
    [error] = stats.source_errors
    assert "HTTP 401" in error and "refused the credentials for 127.0.0.1" in error and TOKEN not in error
    assert "KADAPT_WEB_CREDENTIALS" in error
    wiki.expired, wiki.down = False, True
    stats = sync_kb(catalog, "hr")
    assert stats.deleted == 0 and "HTTP 503" in stats.source_errors[0]
    assert kb_status(catalog, store, "hr")["documents"] == 4


def test_a_missing_space_is_an_error_not_an_empty_source(kadapt_env, wiki):
    source = SourceUnderTest(ConfluenceConnector, {"url": wiki.site, "space": "NOPE"}, kadapt_env, str, str, str)
    with pytest.raises(KadaptError, match="HTTP 404 .*no such space or page"):
        load(source)


def test_the_apis_links_never_lead_off_the_site(kadapt_env, wiki):
    context = ConnectorContext(settings=get_settings(), source_id=1, work_dir=kadapt_env)
    connector = ConfluenceConnector(ConfluenceConfig(url=wiki.site, space="HR"), context)
    assert connector._next("/rest/api/content?start=2") == "/rest/api/content?start=2"
    assert connector._next("/wiki/rest/api/content?start=2") == "/rest/api/content?start=2"
    for link in ("https://evil.example/rest/api/content", "//evil.example/rest/api/x", "/plugins/servlet/x"):
        with pytest.raises(KadaptError, match="not a path on the site"):
            connector._next(link)


@pytest.mark.parametrize(
    "config, problem",
    [
        ({"url": "https://x.atlassian.net/wiki"}, "give a space key or a root_page id"),
        ({"url": "https://x.atlassian.net/wiki", "space": "HR; DROP"}, "a space key is letters"),
        ({"url": "https://x.atlassian.net/wiki", "root_page": "../admin"}, "a page id is a number"),
        ({"url": "https://me:token@x.atlassian.net/wiki", "space": "HR"}, "without credentials"),
        ({"url": "ftp://x.atlassian.net/wiki", "space": "HR"}, "http(s) URL"),
        ({"url": "https://x.atlassian.net/wiki", "space": "HR", "token": "t"}, "Extra inputs"),
    ],
)
def test_config_refuses_what_is_not_a_site_space_or_page(config, problem):
    with pytest.raises(InvalidInput) as raised:
        validate_config(ConfluenceConnector, config)
    assert problem in raised.value.message and "token@" not in raised.value.message


def test_view_restrictions_become_readers_with_their_ancestors_and_attachments(kadapt_env, wiki):
    leave, travel, desk = page(wiki, "Leave"), page(wiki, "Travel"), page(wiki, "Service desk")
    leave.read_groups = ["confluence-hr", "confluence-finance"]
    travel.read_groups = ["confluence-hr"]  # narrower below: only hr passes both
    mapping = {"confluence-hr": "hr", "confluence-finance": "finance"}
    config = {"url": wiki.site, "space": "HR", "permissions": True, "group_map": mapping}
    source = SourceUnderTest(ConfluenceConnector, config, kadapt_env, str, str, str)
    loaded = documents(load(source))
    readers = {document.metadata["title"]: document.metadata.get("readers") for document in loaded.values()}
    assert readers == {
        "Leave": ["finance", "hr"],
        "expenses.docx": ["finance", "hr"],  # an attachment is read by whoever may read its page
        "Travel": ["hr"],
        "Service desk": ["hr"],  # inherits both ancestors' restrictions
    }

    known = {locator: document.metadata["version"] for locator, document in loaded.items()}
    desk.read_users = ["5b10a2844c20165700ede21g"]  # a user-only restriction below: no group may read it
    again = load(source, known)
    changed = {item.metadata["title"]: item.metadata.get("readers") for item in again if hasattr(item, "metadata")}
    assert changed == {"Service desk": []}  # the only document re-read: its restriction changed, not its text


def test_without_permissions_no_readers_are_set(kadapt_env, wiki):
    page(wiki, "Leave").read_groups = ["confluence-hr"]
    source = SourceUnderTest(ConfluenceConnector, {"url": wiki.site, "space": "HR"}, kadapt_env, str, str, str)
    assert all("readers" not in document.metadata for document in documents(load(source)).values())


def test_restrictions_fail_closed_and_unmapped_groups_are_dropped(kadapt_env, wiki):
    from kadapt_confluence import _read_restriction

    assert _read_restriction({"id": "1"}) == frozenset()  # not expanded: admins only, never "unrestricted"
    partial = {"group": {"results": [{"name": "hr"}], "size": 2}, "user": {"results": []}}
    assert _read_restriction({"restrictions": {"read": {"restrictions": partial}}}) == frozenset()
    page(wiki, "Leave").read_groups = ["confluence-hr", "confluence-contractors"]
    config = {"url": wiki.site, "space": "HR", "permissions": True, "group_map": {"confluence-hr": "hr"}}
    source = SourceUnderTest(ConfluenceConnector, config, kadapt_env, str, str, str)
    leave = next(d for d in documents(load(source)).values() if d.metadata["title"] == "Leave")
    assert leave.metadata["readers"] == ["hr"]


def test_the_command_line_takes_a_group_map_as_a_json_object():
    from kadapt.cli.source import parse_connector_options

    args = ["--url", "https://x.atlassian.net/wiki", "--space", "HR", "--permissions", "--group-map", '{"c-hr": "hr"}']
    config = ConfluenceConfig.model_validate(parse_connector_options(args, ConfluenceConfig))
    assert (config.permissions, config.group_map) == (True, {"c-hr": "hr"})
    with pytest.raises(InvalidInput, match="--group-map takes a JSON object"):
        parse_connector_options(["--group-map", "hr"], ConfluenceConfig)

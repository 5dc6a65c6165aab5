"""The sharepoint connector against Microsoft Graph's documented JSON on 127.0.0.1 (tests/connectors/
graph_server.py): conformance, delta queries that read only what changed (seen in the server's log), folders
moved in and out, deletions, an expired access token renewed, an expired delta link, 429 and an outage."""

from __future__ import annotations

import io
import json

import pytest

from kadapt.connectors import ConnectorContext, validate_config
from kadapt.errors import InvalidInput, KadaptError
from kadapt.settings import get_settings
from kadapt_sharepoint import SharePointConfig, SharePointConnector
from tests.connectors.conformance import ConnectorConformance, SourceUnderTest, documents, load
from tests.connectors.graph_server import Graph

CLIENT_ID, SECRET = "3f1c-app", "app-s3cret"


def docx(text: str) -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def credentials(kadapt_env, monkeypatch, graph, secret=SECRET) -> None:
    oauth = {"token_url": f"{graph.base}/token", "client_id": CLIENT_ID, "client_secret": secret}
    path = kadapt_env / "secrets" / "web.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({graph.base: {"oauth": oauth | {"scope": "https://graph.microsoft.com/.default"}}}))
    monkeypatch.setenv("KADAPT_WEB_CREDENTIALS", str(path))
    get_settings.cache_clear()


@pytest.fixture
def graph(kadapt_env, monkeypatch):
    monkeypatch.setenv("KADAPT_ALLOW_PRIVATE_NETWORKS", "true")  # the server is on 127.0.0.1
    with Graph(CLIENT_ID, SECRET) as server:
        credentials(kadapt_env, monkeypatch, server)
        policies = server.folder("Policies")
        server.put("leave.md", b"# Leave\nLeave requests go through Workday.", policies)
        server.put("desk.txt", b"The service desk answers at extension 199.", policies)
        old = server.folder("Old", policies)
        server.put("expenses.docx", docx("Receipts are due within 27 days."), old)
        server.put("minutes.md", b"# Minutes\nOutside the folder.", "root")
        yield server


def config(graph, **extra) -> dict:
    return {"site": "contoso.sharepoint.com/sites/HR", "folder": "Policies", "graph_url": graph.base + "/v1.0"} | extra


def item(graph, name) -> str:
    return next(key for key, value in graph.items.items() if value.get("name") == name)


class TestSharePointConformance(ConnectorConformance):
    @pytest.fixture
    def source(self, kadapt_env, graph):
        def change():
            graph.put(
                "desk.txt",
                b"The service desk moved to extension 200.",
                item(graph, "Policies"),
                item(graph, "desk.txt"),
            )
            return "desk.txt"

        def remove():
            graph.delete(item(graph, "leave.md"))
            return "leave.md"

        def break_one():
            graph.put("expenses.docx", b"not a zip archive", item(graph, "Old"), item(graph, "expenses.docx"))
            return "Old/expenses.docx"

        def make_unavailable():
            graph.down = True

        return SourceUnderTest(
            SharePointConnector, config(graph), kadapt_env / "w", change, remove, break_one, make_unavailable
        )


def sync(catalog):
    from kadapt.sync import sync_kb

    return sync_kb(catalog, "hr")


def add(catalog, graph, **extra):
    from kadapt.kbs import add_source, create_kb

    create_kb(catalog, "hr")
    add_source(catalog, get_settings(), "hr", "sharepoint", config(graph, **extra))


def test_a_delta_link_reads_only_what_changed_and_moves_take_files_in_and_out(kadapt_env, graph, catalog, store):
    from kadapt.kbs import get_kb

    add(catalog, graph)
    first = sync(catalog)
    assert (first.added, first.failed, first.source_errors) == (3, 0, [])
    assert graph.downloads() == sorted(item(graph, name) for name in ("leave.md", "desk.txt", "expenses.docx"))
    assert all("authorization" not in {k.lower() for k in headers} for headers in graph.download_headers)
    kb = get_kb(catalog, "hr")
    assert "27 days" in store.search(kb, "When are receipts due?", k=1)[0].text

    graph.log.clear()
    second = sync(catalog)
    assert (second.skipped_unread, second.added, second.updated, second.deleted) == (3, 0, 0, 0)
    deltas = [path for _, path, _ in graph.log if "/root/delta" in path]
    assert len(deltas) == 1 and "token=" in deltas[0] and graph.downloads() == []

    policies = item(graph, "Policies")
    graph.put("desk.txt", b"The service desk moved to extension 200.", policies, item(graph, "desk.txt"))
    graph.delete(item(graph, "leave.md"))
    graph.move(item(graph, "Old"), "root")  # its file leaves the folder, though the delta reports only the folder
    archive = graph.folder("Archive")
    graph.put("travel.md", b"# Travel\nBook trains for trips under 500 km.", archive)
    graph.move(archive, policies)  # a folder moved in brings its file
    graph.log.clear()
    third = sync(catalog)
    assert graph.downloads() == sorted([item(graph, "desk.txt"), item(graph, "travel.md")])
    assert (third.updated, third.added, third.deleted, third.skipped_unread) == (1, 1, 2, 0)
    assert "extension 200" in store.search(kb, "service desk extension", k=1)[0].text
    assert store.search(kb, "train trips", k=1)[0].locator == "Archive/travel.md"
    assert all(hit.locator not in ("leave.md", "Old/expenses.docx") for hit in store.search(kb, "leave receipts", k=5))


def test_an_expired_token_is_renewed_and_an_expired_delta_link_reads_afresh(kadapt_env, graph, catalog):
    add(catalog, graph)
    assert sync(catalog).added == 3
    graph.expire_after = 1  # the access token expires during the sync, after its first request
    graph.oldest_delta = graph.seq + 1  # and the delta link has expired
    graph.log.clear()
    stats = sync(catalog)
    assert (stats.source_errors, stats.skipped_unread, stats.deleted) == ([], 3, 0)
    statuses = [(method, path.split("?")[0].rsplit("/", 1)[-1], status) for method, path, status in graph.log]
    assert statuses[:5] == [
        ("POST", "token", 200),
        ("GET", "HR", 200),  # the site
        ("GET", "drive", 401),  # expired: a new token is asked for and the request made again
        ("POST", "token", 200),
        ("GET", "drive", 200),
    ]
    assert ("GET", "delta", 410) in statuses and graph.downloads() == []  # read afresh, nothing downloaded again


def test_a_refused_client_or_an_outage_fails_the_sync_and_deletes_nothing(
    kadapt_env, graph, catalog, store, monkeypatch
):
    from kadapt.kbs import kb_status

    add(catalog, graph)
    assert sync(catalog).added == 3
    credentials(kadapt_env, monkeypatch, graph, secret="wrong")
    graph.tokens.clear()
    stats = sync(catalog)
    [error] = stats.source_errors
    assert "refused the OAuth client (HTTP 401: invalid_client)" in error and "wrong" not in error
    credentials(kadapt_env, monkeypatch, graph)
    graph.down = True
    stats = sync(catalog)
    assert "HTTP 503" in stats.source_errors[0] and stats.deleted == 0
    assert kb_status(catalog, store, "hr")["documents"] == 3


def test_rate_limits_are_waited_out(kadapt_env, graph):
    graph.throttle = 2
    source = SourceUnderTest(SharePointConnector, config(graph), kadapt_env, str, str, str)
    assert set(documents(load(source))) == {"leave.md", "desk.txt", "Old/expenses.docx"}
    assert [status for _, _, status in graph.log[:4]] == [200, 429, 429, 200]  # the token, then the site thrice


def test_a_library_by_name_and_a_missing_one(kadapt_env, graph):
    source = SourceUnderTest(
        SharePointConnector, config(graph, library="Documents", folder=""), kadapt_env, str, str, str
    )
    assert "minutes.md" in documents(load(source))
    source.config = config(graph, library="Wiki")
    with pytest.raises(
        KadaptError, match="no library named 'Wiki' in the site \\(its libraries: Archive, Documents\\)"
    ):
        load(source)


def test_graphs_links_are_followed_only_on_the_configured_graph(kadapt_env, graph):
    context = ConnectorContext(settings=get_settings(), source_id=1, work_dir=kadapt_env)
    connector = SharePointConnector(SharePointConfig.model_validate(config(graph)), context)
    with pytest.raises(KadaptError, match="off"):
        connector._on_graph("https://evil.example/v1.0/drives/x/root/delta?token=1")


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"site": "https://contoso.sharepoint.com/sites/HR?x=1"}, "site"),
        ({"site": "contoso"}, "<tenant>.sharepoint.com"),
        ({"folder": "Policies/../../Finance"}, "segment SharePoint does not allow"),
        ({"graph_url": "https://user:pw@graph.microsoft.com/v1.0"}, "without credentials"),
        ({"graph_url": "https://:pw@graph.microsoft.com/v1.0"}, "without credentials"),
        ({"client_secret": "x"}, "Extra inputs"),
    ],
)
def test_config_refuses_what_is_not_a_site_folder_or_graph(changes, problem):
    base = {"site": "contoso.sharepoint.com/sites/HR"}
    with pytest.raises(InvalidInput) as raised:
        validate_config(SharePointConnector, base | changes)
    assert problem in raised.value.message and "pw@" not in raised.value.message

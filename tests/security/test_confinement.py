"""Sources are confined per owner group (KADAPT_GROUP_ALLOWANCES): a KB owned by "hr" reads hr's folders and
reaches hr's intranet hosts only, never another group's or the admin-wide ones; when a group loses an
allowance, its sources' next sync fails unread."""

from __future__ import annotations

import re
import socket
import time

import pytest
from fastapi.testclient import TestClient

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
def folders(env):
    """A folder per group and one for the admin, each with a document."""
    made = {}
    for name in ("hr", "eng", "admin"):
        folder = env.root / "groups" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.md").write_text(f"# {name}\n\nThe {name} handbook.\n")
        made[name] = folder
    return made


def confined(env, folders, **groups):
    """The package's settings with the global root being the admin folder, and ``groups``' allowances."""
    from kadapt.settings import GroupAllowance

    allowances = {"hr": {"roots": [folders["hr"]]}, "eng": {"roots": [folders["eng"]]}} | groups
    return env.settings.model_copy(
        update={
            "allowed_roots": [folders["admin"]],
            "group_allowances": {group: GroupAllowance(**entry) for group, entry in allowances.items()},
        }
    )


def _kb(env, *owner_groups) -> str:
    from kadapt.kbs import create_kb

    slug = f"confined-{time.monotonic_ns()}"
    create_kb(env.catalog, slug, reader_groups=["staff"], owner_groups=list(owner_groups))
    return slug


def test_a_group_reads_its_own_roots_only_through_the_api(env, folders):
    settings = confined(env, folders)
    slug = _kb(env, "hr")
    with TestClient(_app(settings), raise_server_exceptions=False) as client:

        def add(folder):
            return client.post(
                f"/v1/kbs/{slug}/sources",
                headers=env.headers("editor_owner"),
                json={"kind": "files", "config": {"path": str(folder)}},
            )

        assert add(folders["hr"]).status_code == 201
        for other in ("eng", "admin"):  # another group's folder; the admin-wide root is not a group's
            refused = add(folders[other])
            assert refused.status_code == 403, refused.text
            message = refused.json()["error"]["message"]
            assert f"{folders[other]} is outside the allowed roots of a KB owned by hr ({folders['hr']})" in message
            assert "KADAPT_GROUP_ALLOWANCES" in message


def test_a_kb_no_group_owns_reads_the_global_roots_only(env, folders):
    from kadapt.errors import PermissionDenied
    from kadapt.kbs import add_source

    settings = confined(env, folders)
    slug = _kb(env)
    assert add_source(env.catalog, settings, slug, "files", {"path": str(folders["admin"])}).id
    with pytest.raises(PermissionDenied, match="KB that no group owns.*KADAPT_ALLOWED_ROOTS"):
        add_source(env.catalog, settings, slug, "files", {"path": str(folders["hr"])})


def test_a_kb_owned_by_two_groups_reads_the_roots_of_both(env, folders):
    from kadapt.kbs import add_source

    settings = confined(env, folders)
    slug = _kb(env, "hr", "eng")
    for group in ("hr", "eng"):
        assert add_source(env.catalog, settings, slug, "files", {"path": str(folders[group])}).id


def test_an_editor_cannot_name_another_group_as_co_owner_to_borrow_its_roots(env):
    with env.client() as client:
        response = client.post(
            "/v1/kbs",
            headers=env.headers("editor_owner"),
            json={"slug": f"borrow-{time.monotonic_ns()}", "owner_groups": ["hr", "eng"]},
        )
    assert response.status_code == 403, response.text
    assert "only name owner groups they belong to, not eng" in response.json()["error"]["message"]


def test_the_console_edit_route_confines_too(env, folders):
    from kadapt.catalog import Source
    from kadapt.kbs import add_source

    settings = confined(env, folders)
    slug = _kb(env, "hr")
    source = add_source(env.catalog, settings, slug, "files", {"path": str(folders["hr"])})
    client = TestClient(_app(settings), follow_redirects=False)
    token = CSRF.search(client.get("/ui/login").text).group(1)
    assert client.post("/ui/login", data={"csrf_token": token, "api_key": env.keys["editor_owner"]}).status_code == 303
    csrf = CSRF_META.search(client.get("/ui/chat").text).group(1)
    response = client.post(
        f"/ui/kbs/{slug}/sources/{source.id}/edit",
        data={"csrf_token": csrf, "config": f'{{"path": "{folders["eng"]}"}}'},
        headers={"Accept": "text/html"},
    )
    assert response.status_code == 403, response.text
    assert "outside the allowed roots of a KB owned by hr" in response.text
    with env.catalog.session() as session:
        assert session.get(Source, source.id).config["path"] == str(folders["hr"])


def test_a_source_whose_group_lost_its_root_fails_its_sync_unread(env, folders):
    from sqlalchemy import select

    from kadapt.catalog import Document
    from kadapt.kbs import add_source
    from kadapt.sync import sync_kb

    before = confined(env, folders)
    slug = _kb(env, "hr")
    add_source(env.catalog, before, slug, "files", {"path": str(folders["hr"])})
    assert sync_kb(env.catalog, slug, settings=before).added == 1
    (folders["hr"] / "new.md").write_text("# New\n\nWritten after hr lost the folder.\n")
    after = confined(env, folders, hr={"roots": []})
    stats = sync_kb(env.catalog, slug, settings=after)
    assert (stats.listed, stats.added) == (0, 0)  # nothing read
    assert len(stats.source_errors) == 1
    assert "outside the allowed roots of a KB owned by hr (none)" in stats.source_errors[0]
    with env.catalog.session() as session:  # and what was synced before stays, unchanged
        assert list(session.scalars(select(Document.locator).where(Document.kb_id.in_(_kb_ids(env, slug))))) == [
            "hr.md"
        ]


def _kb_ids(env, slug):
    from kadapt.kbs import get_kb

    return [get_kb(env.catalog, slug).id]


@pytest.fixture
def intranet(monkeypatch):
    """``wiki.intranet.example`` resolves to 10.1.2.3, ``metadata.intranet.example`` to 169.254.169.254 and
    ``loop.intranet.example`` to 127.0.0.1; no connection is made by the tests that use it."""
    answers = {
        "wiki.intranet.example": "10.1.2.3",
        "metadata.intranet.example": "169.254.169.254",
        "loop.intranet.example": "127.0.0.1",
    }

    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port or 0))]

    def refuse(*args, **kwargs):
        raise AssertionError(f"connection attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_a_group_reaches_its_named_intranet_hosts_and_nothing_else_private(env, folders, intranet):
    from kadapt.errors import PermissionDenied
    from kadapt.kbs import add_source

    named = ["wiki.intranet.example", "metadata.intranet.example", "loop.intranet.example"]
    settings = confined(env, folders, hr={"roots": [folders["hr"]], "hosts": named})
    hr, eng = _kb(env, "hr"), _kb(env, "eng")
    assert add_source(env.catalog, settings, hr, "web", {"url": "https://wiki.intranet.example/"}).id
    assert add_source(env.catalog, settings, hr, "git", {"url": "https://wiki.intranet.example/team/r.git"}).id
    with pytest.raises(PermissionDenied, match="wiki.intranet.example resolves to 10.1.2.3"):
        add_source(env.catalog, settings, eng, "web", {"url": "https://wiki.intranet.example/"})
    for host, address in (("metadata.intranet.example", "169.254.169.254"), ("loop.intranet.example", "127.0.0.1")):
        with pytest.raises(PermissionDenied, match=f"{host} resolves to {address}"):  # named, still never these
            add_source(env.catalog, settings, hr, "web", {"url": f"https://{host}/"})


def test_group_allowances_are_validated_with_clear_errors(monkeypatch):
    from pydantic import ValidationError

    from kadapt.settings import Settings

    cases = [
        ('{"hr": {"roots": ["docs/hr"]}}', "root 'docs/hr' is not an absolute path"),
        ('{"hr": {"hosts": ["wiki intranet"]}}', "'wiki intranet' is not a host name or address"),
        ('{"hr": {"rootz": ["/srv"]}}', "Extra inputs are not permitted"),
        ('{"hr": {"private_networks": "sometimes"}}', "valid boolean"),
    ]
    for value, words in cases:
        monkeypatch.setenv("KADAPT_GROUP_ALLOWANCES", value)
        with pytest.raises(ValidationError, match=re.escape(words)):
            Settings()


def test_the_default_allowed_roots_are_none_not_the_working_directory(monkeypatch, tmp_path):
    from kadapt.allowances import source_allowances
    from kadapt.settings import Settings

    monkeypatch.delenv("KADAPT_ALLOWED_ROOTS", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.effective_allowed_roots == []
    assert "(none)" in (source_allowances(settings).refusal(tmp_path / "docs") or "")


def _app(settings):
    from kadapt.api import create_app

    return create_app(settings)


def test_group_credentials_and_a_catalog_kept_elsewhere_are_never_read(tmp_path, monkeypatch):
    """kadapt's secrets outside its data directory (a group's git credentials, a SQLite catalog elsewhere) are
    protected like the data directory itself, even when a root holds them."""
    import json

    from sqlalchemy import select

    from kadapt.catalog import Document, DocumentError, open_catalog
    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb
    from tests.conftest import clear_caches, close_clients

    share = tmp_path / "share"
    share.mkdir()
    (share / "policy.md").write_text("# Policy\n\nEmployees get 27 days of leave.\n")
    (share / "eng-credentials.txt").write_text("https://eng:secret-token@git.example.com\n")
    monkeypatch.setenv("KADAPT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KADAPT_CATALOG_URL", f"sqlite:///{share / 'catalog.db'}")
    monkeypatch.delenv("KADAPT_CHROMA_URL", raising=False)
    monkeypatch.setenv(
        "KADAPT_GROUP_ALLOWANCES",
        json.dumps({"hr": {"roots": [str(share)]}, "eng": {"git_credentials": str(share / "eng-credentials.txt")}}),
    )
    get_settings.cache_clear()
    try:
        settings = get_settings()
        catalog = open_catalog(settings)
        kb = create_kb(catalog, "hr-share", owner_groups=["hr"])
        config = {"path": str(share), "include": ["*.md", "*.txt", "*.db"]}
        add_source(catalog, settings, "hr-share", "files", config)
        sync_kb(catalog, "hr-share", settings=settings)
        with catalog.session() as session:
            locators = set(session.scalars(select(Document.locator).where(Document.kb_id == kb.id)))
            errors = {row.locator: row.message for row in session.scalars(select(DocumentError))}
    finally:  # this test's catalog and store must not outlive it in the process's caches
        close_clients()
        clear_caches()
    assert locators == {"policy.md"}
    assert "data directory" in errors["eng-credentials.txt"] and "data directory" in errors["catalog.db"]


def test_a_file_swapped_for_a_symlink_after_its_check_is_not_read(kadapt_env, monkeypatch):
    """Between the check of a path and its opening, someone who can write under a root swaps the file for a
    symlink into kadapt's data directory: what was opened is judged again, and refused."""
    import os
    from pathlib import Path

    from sqlalchemy import select

    from kadapt.catalog import Document, DocumentError, open_catalog
    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    settings = get_settings()
    docs = kadapt_env / "docs"
    docs.mkdir()
    victim = docs / "a.md"
    victim.write_text("# A\n\nAn ordinary page.\n")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret = settings.data_dir / "secret.md"
    secret.write_text("# Secret\n\nThe catalog's own words.\n")
    catalog = open_catalog(settings)
    create_kb(catalog, "swap")
    add_source(catalog, settings, "swap", "files", {"path": str(docs)})
    real_stat = Path.stat
    swapped = []

    def stat_then_swap(self, *args, **kwargs):  # the attacker acts right after the check, before the open
        result = real_stat(self, *args, **kwargs)
        if str(self) == str(victim) and not swapped:
            swapped.append(True)
            os.unlink(victim)
            os.symlink(secret, victim)
        return result

    monkeypatch.setattr(Path, "stat", stat_then_swap)
    sync_kb(catalog, "swap", settings=settings)
    monkeypatch.undo()
    with catalog.session() as session:
        texts = list(session.scalars(select(Document.text)))
        errors = {row.locator: row.message for row in session.scalars(select(DocumentError))}
    assert swapped and not any("catalog's own words" in text for text in texts)
    assert "data directory" in errors["a.md"]

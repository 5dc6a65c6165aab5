"""Finding 1 of the security review: a git source URL such as ``--upload-pack=CMD;@<public IP>:x`` reached
``git fetch`` as an option and ran CMD once the source's mirror existed. Through the API (a fresh source, a
source on a reused id) and the console's edit route it is now refused with a 4xx, and no command runs."""

from __future__ import annotations

import pytest

from kadapt.catalog import Source
from kadapt.kbs import source_work_dir
from kadapt.sync import sync_kb
from tests.connectors.test_git import make_repo
from tests.security.conftest import signed_in


def _attack_url(marker) -> str:
    # 8.8.8.8 is a public address literal: it passes the host check without a lookup, and nothing connects to it
    return f"--upload-pack=touch {marker};@8.8.8.8:x"


@pytest.fixture
def mirrored(env, make_kb):
    """A KB with a git source over a local repository, synced once so that its mirror exists."""
    names = make_kb("git")
    repo = make_repo(env.root / f"repo-{names['kb']}")
    client = env.client()
    response = client.post(
        f"/v1/kbs/{names['kb']}/sources",
        json={"kind": "git", "config": {"url": str(repo), "ref": "main"}},
        headers=env.headers("editor_owner"),
    )
    assert response.status_code == 201, response.text
    source_id = response.json()["id"]
    stats = sync_kb(env.catalog, names["kb"], settings=env.settings)
    assert not stats.source_errors, stats.source_errors
    assert (source_work_dir(env.settings, source_id) / "mirror.git" / "HEAD").exists()
    return names, source_id, client


@pytest.mark.parametrize(
    "config",
    [
        {"url": "ATTACK"},
        {"url": "ATTACK", "ref": "main"},
        {"url": "https://example.com/repo.git", "ref": "--upload-pack=touch MARKER"},
        {"url": "https://example.com/repo.git", "subdir": "--output=MARKER"},
        {"url": "ext::sh -c touch% MARKER"},
        {"url": "fd::17"},
        {"url": "ssh://-oProxyCommand=touch% MARKER@example.com/x"},
    ],
)
def test_option_like_git_configs_are_refused_on_a_fresh_source(env, make_kb, tmp_path, config):
    marker = tmp_path / "marker"
    config = {
        key: value.replace("ATTACK", _attack_url(marker)).replace("MARKER", str(marker))
        for key, value in config.items()
    }
    names = make_kb("git")
    response = env.client().post(
        f"/v1/kbs/{names['kb']}/sources", json={"kind": "git", "config": config}, headers=env.headers("editor_owner")
    )
    assert 400 <= response.status_code < 500, response.text
    assert "git" in response.json()["error"]["message"]
    assert not marker.exists()


def test_attack_url_on_a_reused_source_id_is_refused_and_the_old_mirror_is_gone(env, mirrored, tmp_path):
    names, source_id, client = mirrored
    marker = tmp_path / "marker"
    headers = env.headers("editor_owner")
    assert client.delete(f"/v1/kbs/{names['kb']}/sources/{source_id}", headers=headers).status_code == 204
    # the mirror goes with its source: a later source that gets the same id never fetches into it
    assert not source_work_dir(env.settings, source_id).exists()
    response = client.post(
        f"/v1/kbs/{names['kb']}/sources",
        json={"kind": "git", "config": {"url": _attack_url(marker)}},
        headers=headers,
    )
    assert 400 <= response.status_code < 500, response.text
    assert "may not start with '-'" in response.json()["error"]["message"]
    sync_kb(env.catalog, names["kb"], settings=env.settings)
    assert not marker.exists()


def test_attack_url_through_the_console_edit_route_is_refused(env, mirrored, tmp_path):
    names, source_id, _ = mirrored
    marker = tmp_path / "marker"
    client, csrf = signed_in(env, "editor_owner")
    response = client.post(
        f"/ui/kbs/{names['kb']}/sources/{source_id}/edit",
        data={"csrf_token": csrf, "config": f'{{"url": "{_attack_url(marker)}"}}'},
        headers={"Accept": "text/html"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert "may not start with" in response.text
    with env.catalog.session() as session:
        assert not session.get(Source, source_id).config["url"].startswith("-")
    stats = sync_kb(env.catalog, names["kb"], settings=env.settings)  # fetches into the existing mirror
    assert not stats.source_errors, stats.source_errors
    assert not marker.exists()


def test_changing_a_git_url_in_the_console_deletes_the_old_mirror(env, mirrored):
    names, source_id, _ = mirrored
    other = make_repo(env.root / f"other-{names['kb']}")
    client, csrf = signed_in(env, "editor_owner")
    response = client.post(
        f"/ui/kbs/{names['kb']}/sources/{source_id}/edit",
        data={"csrf_token": csrf, "config": f'{{"url": "{other}", "ref": "main"}}'},
        headers={"Accept": "text/html"},
    )
    assert response.status_code == 303, response.text
    assert not source_work_dir(env.settings, source_id).exists()


def test_a_stale_mirror_is_never_fetched_with_the_url_as_an_option(env, mirrored, tmp_path):
    """Defence in depth: even a URL that slipped past validation is written to the mirror's config and the
    fetch names the remote after ``--``; git itself then refuses the option-like host."""
    from kadapt.connectors import ConnectorContext
    from kadapt_git import GitConfig, GitConnector

    _, source_id, _ = mirrored
    marker = tmp_path / "marker"
    config = GitConfig.model_construct(url=f"--upload-pack=touch {marker};@127.0.0.1:x", ref="main", subdir="")
    context = ConnectorContext(
        settings=env.settings.model_copy(update={"allow_private_networks": True}),
        source_id=source_id,
        work_dir=source_work_dir(env.settings, source_id),
    )
    connector = GitConnector(config, context)
    connector.check = lambda: None  # the check refuses it first; this test is about the fetch alone
    with pytest.raises(Exception):  # noqa: B017 - git's refusal, whichever error it surfaces as
        connector._mirror()
    assert not marker.exists()


def test_an_attack_url_already_in_the_catalog_is_refused_at_sync_and_runs_nothing(env, mirrored, tmp_path):
    """A config written before the checks existed (or by hand) is validated again by every sync: the
    source fails with its reason, and git never sees the URL, although the mirror exists."""
    names, source_id, _ = mirrored
    marker = tmp_path / "marker"
    with env.catalog.session() as session:
        source = session.get(Source, source_id)
        source.config = {**source.config, "url": f"--upload-pack=touch {marker};@127.0.0.1:x"}
    stats = sync_kb(env.catalog, names["kb"], settings=env.settings)
    assert any("may not start with '-'" in error for error in stats.source_errors), stats.source_errors
    assert stats.deleted == 0  # a source that could not be read keeps its documents
    assert not marker.exists()


def test_git_transports_follow_the_setting(env, make_kb, tmp_path):
    """Plain http is off unless KADAPT_GIT_PROTOCOLS names it; turning ``file`` off refuses local repositories."""
    from kadapt.errors import InvalidInput
    from kadapt.kbs import add_source

    names = make_kb("git")
    with pytest.raises(InvalidInput, match="KADAPT_GIT_PROTOCOLS"):
        add_source(env.catalog, env.settings, names["kb"], "git", {"url": "http://203.0.113.7/repo.git"})
    repo = make_repo(env.root / f"local-{names['kb']}")
    remote_only = env.settings.model_copy(update={"git_protocols": ["https", "ssh"]})
    with pytest.raises(InvalidInput, match="git over file is turned off"):
        add_source(env.catalog, remote_only, names["kb"], "git", {"url": str(repo), "ref": "main"})
    with_http = env.settings.model_copy(update={"git_protocols": ["https", "http"]})
    source = add_source(env.catalog, with_http, names["kb"], "git", {"url": "http://172.32.0.1/repo.git"})
    assert source.id  # validated only: nothing is fetched until a sync


def test_a_local_path_that_is_no_repository_cannot_lead_git_to_its_dot_git_neighbour(env, mirrored, make_kb):
    """git tries ``<path>.git`` when ``<path>`` is no repository: a plain folder next to a symlink named
    ``<folder>.git`` into the data directory (another source's mirror) must not be read through it."""
    from kadapt.errors import InvalidInput
    from kadapt.kbs import add_source

    names, source_id, _ = mirrored
    plain = env.root / f"plain-{names['kb']}"
    plain.mkdir()
    (env.root / f"plain-{names['kb']}.git").symlink_to(source_work_dir(env.settings, source_id) / "mirror.git")
    other = make_kb("git")
    with pytest.raises(InvalidInput, match="no git repository at"):
        add_source(env.catalog, env.settings, other["kb"], "git", {"url": str(plain), "ref": "main"})


def test_a_malformed_git_url_is_a_clear_400_not_a_server_error(env, make_kb):
    names = make_kb("git")
    response = env.client().post(
        f"/v1/kbs/{names['kb']}/sources",
        json={"kind": "git", "config": {"url": "https://[x/repo"}},
        headers=env.headers("editor_owner"),
    )
    assert response.status_code in (400, 422), response.text
    assert "not a valid git URL" in response.json()["error"]["message"]

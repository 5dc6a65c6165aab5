"""Connectors stay inside KADAPT_ALLOWED_ROOTS: '..' and symlinks that lead out are refused when a source is
added, and a symlink inside a source that points out is skipped and recorded at sync."""

from __future__ import annotations

import pytest
from sqlalchemy import select


@pytest.fixture
def outside(tmp_path_factory):
    folder = tmp_path_factory.mktemp("outside-the-roots")
    (folder / "passwords.md").write_text("# Passwords\n\nThe root password is hunter2.\n")
    return folder


def _sources(env, slug: str) -> list:
    from kadapt.kbs import list_sources

    return list_sources(env.catalog, slug)


def test_dotdot_and_symlinked_folders_are_refused_when_the_source_is_added(env, make_kb, outside):
    names = make_kb()
    before = len(_sources(env, names["kb"]))
    link = env.root / f"link-to-{outside.name}"
    link.symlink_to(outside, target_is_directory=True)
    escapes = [
        str(env.docs / ".." / ".." / outside.name),  # climbs out with ..
        str(env.root / ".." / outside.name / "."),
        str(link),  # a symlink inside the root whose target is outside
        f"../../../../../../../../{outside}",  # relative to wherever the server runs
    ]
    with env.client() as client:
        for path in escapes:
            response = client.post(
                f"/v1/kbs/{names['kb']}/sources",
                headers=env.headers("admin"),
                json={"kind": "files", "config": {"path": path}},
            )
            assert response.status_code == 403, (path, response.text)
            assert "outside the allowed roots" in response.json()["error"]["message"]
        git = client.post(
            f"/v1/kbs/{names['kb']}/sources",
            headers=env.headers("admin"),
            json={"kind": "git", "config": {"url": f"file://{env.root}/../{outside.name}"}},
        )
        assert git.status_code == 403 and "outside the allowed roots" in git.json()["error"]["message"]
    assert len(_sources(env, names["kb"])) == before  # nothing refused was stored


def test_a_symlink_inside_a_source_that_points_out_is_skipped_and_recorded(env, outside):
    from kadapt.catalog import Document
    from kadapt.kbs import add_source, create_kb, kb_status
    from kadapt.store import get_store
    from kadapt.sync import sync_kb

    folder = env.root / "linked-docs"
    folder.mkdir()
    (folder / "handbook.md").write_text("# Handbook\n\nLunch is at noon.\n")
    (folder / "leak.md").symlink_to(outside / "passwords.md")
    (folder / "leakdir").symlink_to(outside, target_is_directory=True)
    kb = create_kb(env.catalog, "symlinks")
    add_source(env.catalog, env.settings, "symlinks", "files", {"path": str(folder)})  # the folder itself is inside

    stats = sync_kb(env.catalog, "symlinks")
    assert stats.added == 1 and stats.failed == 2
    errors = {error["locator"]: error["message"] for error in kb_status(env.catalog, get_store(), "symlinks")["errors"]}
    assert set(errors) == {"leak.md", "leakdir"}
    assert all("outside the allowed roots" in message for message in errors.values())
    with env.catalog.session() as session:
        texts = list(session.scalars(select(Document.text).where(Document.kb_id == kb.id)))
    assert texts and not any("hunter2" in text for text in texts)

"""KADAPT_MAX_DOCUMENT_BYTES in every connector: a document over it is recorded as that document's error,
naming its size, the limit and the setting, and the rest of the sync goes on."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from fpdf import FPDF

from kadapt.kbs import add_source, create_kb
from kadapt.sync import sync_kb
from tests.connectors.webserver import Site
from tests.limit_checks.rows import documents_of, errors_of

LIMIT = 10_000
SETTING = "(KADAPT_MAX_DOCUMENT_BYTES)"
LONG_TEXT = "Every badge opens the lab door between seven and seven. " * 3000  # 168,000 bytes


def make_kb(catalog, kind: str, config: dict, slug: str = "docs") -> str:
    from kadapt.settings import get_settings

    create_kb(catalog, slug)
    add_source(catalog, get_settings(), slug, kind, config)
    return slug


def test_files_over_the_limit_are_errors_and_a_file_at_the_limit_syncs(catalog, limits, kadapt_env):
    limits(max_document_bytes=LIMIT)
    root = kadapt_env / "docs"
    root.mkdir()
    (root / "ok.md").write_text("# Lunch\n\nLunch is served at noon.\n")
    (root / "at-limit.txt").write_text("a" * LIMIT)
    (root / "over.txt").write_text("a" * (LIMIT + 1))
    slug = make_kb(catalog, "files", {"path": str(root)})

    stats = sync_kb(catalog, slug)

    assert (stats.added, stats.failed) == (2, 1)
    assert set(documents_of(catalog, slug)) == {"ok.md", "at-limit.txt"}
    assert errors_of(catalog, slug) == {"over.txt": f"file is 10,001 bytes, over the limit of 10,000 {SETTING}"}


def test_compressed_files_are_held_to_the_limit_by_the_text_they_unpack_to(catalog, limits, kadapt_env):
    import docx

    limit = 100_000  # above the size of an empty .docx
    limits(max_document_bytes=limit)
    root = kadapt_env / "docs"
    root.mkdir()
    (root / "ok.md").write_text("# Parking\n\nPermits are renewed every January.\n")
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 6, LONG_TEXT)
    pdf.output(str(root / "manual.pdf"))
    document = docx.Document()
    for start in range(0, len(LONG_TEXT), 2000):
        document.add_paragraph(LONG_TEXT[start : start + 2000])
    document.save(str(root / "manual.docx"))
    small = docx.Document()
    small.add_paragraph("The lab opens at seven.")
    buffer = io.BytesIO()
    small.save(buffer)
    (root / "small.docx").write_bytes(buffer.getvalue())
    (root / "bomb.docx").write_bytes(buffer.getvalue())
    with zipfile.ZipFile(root / "bomb.docx", "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("customXml/padding.xml", bytes(64_000_000))  # deflates to ~64 kB
    for name in ("manual.pdf", "manual.docx", "bomb.docx"):
        assert (root / name).stat().st_size < limit, f"{name} itself must be under the limit"
    slug = make_kb(catalog, "files", {"path": str(root), "include": ["*.md", "*.pdf", "*.docx"]})

    stats = sync_kb(catalog, slug)

    assert (stats.added, stats.failed) == (2, 3)
    errors = errors_of(catalog, slug)
    assert set(errors) == {"manual.pdf", "manual.docx", "bomb.docx"}
    assert errors["manual.pdf"].startswith("the text of its first ")
    assert errors["manual.pdf"].endswith(f"bytes, over the limit of 100,000 {SETTING}")
    assert errors["manual.docx"].startswith("the text extracted from it is 16")  # about 168,000 bytes
    assert errors["manual.docx"].endswith(f"bytes, over the limit of 100,000 {SETTING}")
    assert errors["bomb.docx"].startswith("the .docx unpacks to 64,8")
    assert (
        "over the 64,000,000 allowed for a document of 100,000 bytes (KADAPT_MAX_DOCUMENT_BYTES)"
        in (errors["bomb.docx"])
    )
    assert set(documents_of(catalog, slug)) == {"ok.md", "small.docx"}  # a real .docx unpacks well under it


def test_git_files_over_the_limit_are_errors(catalog, limits, kadapt_env):
    from tests.connectors.test_git import commit, make_repo

    limits(max_document_bytes=LIMIT)
    repo = make_repo(kadapt_env / "repo")
    (repo / "docs" / "big.md").write_text("b" * (LIMIT + 1))
    commit(repo, "a big file")
    slug = make_kb(catalog, "git", {"url": str(repo)})

    stats = sync_kb(catalog, slug)

    assert (stats.added, stats.failed) == (3, 1)
    assert errors_of(catalog, slug) == {"docs/big.md": f"file is 10,001 bytes, over the limit of 10,000 {SETTING}"}
    assert set(documents_of(catalog, slug)) == {"README.md", "docs/deploy.md", "docs/oncall.txt"}


@pytest.fixture
def site():
    """Pages on 127.0.0.1: one just over the limit (with Content-Length), one that never ends (without)."""
    with Site() as running:
        running.raw(
            "/",
            "text/html",
            b'<html><body><p>Home.</p><a href="/ok">ok</a><a href="/big">big</a><a href="/endless">e</a></body></html>',
        )
        running.html("/ok", "OK", "<p>The canteen opens at noon.</p>")
        big = b"<html><body><p>" + b"x" * (LIMIT + 1 - 33) + b"</p></body></html>"
        assert len(big) == LIMIT + 1
        running.raw("/big", "text/html", big)
        running.endless("/endless")
        yield running


def test_web_pages_over_the_limit_are_errors_and_an_endless_page_is_cut_off(catalog, limits, site):
    limits(max_document_bytes=LIMIT, allow_private_networks="true")
    slug = make_kb(catalog, "web", {"url": site.base + "/", "max_depth": 1})

    stats = sync_kb(catalog, slug)

    assert (stats.added, stats.failed) == (2, 2)
    assert set(documents_of(catalog, slug)) == {site.base + "/", site.base + "/ok"}
    errors = errors_of(catalog, slug)
    assert errors[site.base + "/big"] == f"page is 10,001 bytes, over the limit of 10,000 {SETTING}"
    assert errors[site.base + "/endless"] == (
        "page is more than 10,000 bytes, the limit (KADAPT_MAX_DOCUMENT_BYTES); stopped reading it"
    )
    assert site.endless_done.wait(30), "the connector kept reading the endless page"
    assert site.endless_sent < 100_000_000


def test_jsonl_lines_over_the_limit_are_errors_and_a_known_document_keeps_its_last_good_version(
    catalog, limits, kadapt_env
):
    limits(max_document_bytes=LIMIT)
    path = kadapt_env / "docs.jsonl"

    def write(bravo_text: str, extra: list[dict] | None = None) -> None:
        records = [
            {"id": "alpha", "text": "The alpha team ships robots on Mondays."},
            {"id": "bravo", "text": bravo_text},
            {"id": "charlie", "text": "Charlie runs the lab."},
            *(extra or []),
        ]
        path.write_text("".join(json.dumps(record) + "\n" for record in records))

    write("Bravo handles invoices every Friday.")
    slug = make_kb(catalog, "jsonl", {"path": str(path)})
    assert sync_kb(catalog, slug).added == 3

    grown = "b" * (LIMIT + 1 - len('{"id": "bravo", "text": ""}'))
    delta = {"text": "c" * LIMIT, "id": "delta"}  # its id does not come first
    write(grown, extra=[delta])
    stats = sync_kb(catalog, slug)

    assert stats.failed == 2
    assert errors_of(catalog, slug) == {
        "bravo": f"line 2 is 10,001 bytes, over the limit of 10,000 {SETTING}",
        "line-4": f"line 4 is {len(json.dumps(delta)):,} bytes, over the limit of 10,000 {SETTING}",
    }
    texts = documents_of(catalog, slug)
    assert set(texts) == {"alpha", "bravo", "charlie"}
    assert texts["bravo"] == "Bravo handles invoices every Friday."  # the last good version stays


def test_a_plugin_connector_is_held_to_the_limit_by_the_sync(catalog, limits, monkeypatch):
    from kadapt.plugins import get_plugins
    from tests.cli.test_cli import PLUGIN_DIR

    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    limits(max_document_bytes=LIMIT, plugins="kadapt_test_memo")
    get_plugins.cache_clear()
    slug = make_kb(catalog, "memo", {"memo": ["Parking permits are renewed every January.", "é" * 5001]})

    stats = sync_kb(catalog, slug)

    assert (stats.added, stats.failed) == (1, 1)
    assert errors_of(catalog, slug) == {"memo-1": f"text is 10,002 bytes, over the limit of 10,000 {SETTING}"}
    assert set(documents_of(catalog, slug)) == {"memo-0"}

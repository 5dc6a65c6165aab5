"""Incremental ingestion into the catalog and Chroma, measured with counters (never time)."""

from __future__ import annotations

import os

import pytest
from fpdf import FPDF
from sqlalchemy import func, select

from kadapt.catalog import Document, DocumentError, Snapshot, SnapshotDocument, Source
from kadapt.kbs import add_source, create_kb, get_kb, kb_status
from kadapt.sync import remove_source, sync_kb


def make_pdf(path, text):
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 6, text)
    pdf.output(str(path))


def long_text(topic: str, sentences: int = 40) -> str:
    lines = (f"{topic} fact number {i}: the {topic} team reviews item {i} every week." for i in range(sentences))
    return "\n\n".join(lines)


@pytest.fixture
def docs(kadapt_env):
    root = kadapt_env / "docs"
    root.mkdir()
    (root / "vacation.md").write_text("# Vacation\n\nEmployees receive 27 days of paid vacation per year.\n")
    (root / "printer.txt").write_text("The office printer is called NW-PRINT-01 and releases jobs by badge.\n")
    (root / "long.md").write_text(long_text("security"))
    make_pdf(root / "travel.pdf", "Hotels up to EUR 160 per night are approved automatically.")
    return root


@pytest.fixture
def kb(catalog, docs):
    from kadapt.settings import get_settings

    create_kb(catalog, "handbook")
    add_source(catalog, get_settings(), "handbook", "files", {"path": str(docs)})
    return "handbook"


def snapshot_count(catalog):
    with catalog.session() as session:
        return session.scalar(select(func.count()).select_from(Snapshot))


def top_locator(store, query):
    from kadapt.catalog import open_catalog

    return store.search(get_kb(open_catalog(), "handbook"), query, k=1)[0].locator


def test_incremental_sync(catalog, store, kb, docs):
    first = sync_kb(catalog, kb)
    assert (first.added, first.failed, first.snapshot_created) == (4, 0, True)
    total_chunks = store.count(get_kb(catalog, kb))
    assert first.chunks_embedded == total_chunks > 4  # long.md is split into several chunks
    assert top_locator(store, "how many vacation days do I get") == "vacation.md"

    second = sync_kb(catalog, kb)
    assert second.chunks_embedded == 0 and second.added == second.updated == second.deleted == 0
    assert second.skipped_unread == 4 and not second.snapshot_created
    assert snapshot_count(catalog) == 1 and store.count(get_kb(catalog, kb)) == total_chunks

    # touching a file without changing it: read again, same hash, nothing embedded
    os.utime(docs / "printer.txt", ns=(10**9, 10**9))
    touched = sync_kb(catalog, kb)
    assert (touched.unchanged, touched.chunks_embedded, touched.snapshot_created) == (1, 0, False)

    long_chunks = store.document_ids(get_kb(catalog, kb))
    (docs / "vacation.md").write_text("# Vacation\n\nEmployees now receive 30 days of holiday, and sabbaticals.\n")
    edited = sync_kb(catalog, kb)
    assert edited.updated == 1 and edited.added == 0
    assert edited.chunks_embedded == 1 and edited.chunks_deleted == 1
    assert edited.snapshot_created and snapshot_count(catalog) == 2
    assert store.document_ids(get_kb(catalog, kb)) == long_chunks  # chunk counts per document unchanged
    hit = store.search(get_kb(catalog, kb), "sabbaticals and holiday days", k=1)[0]
    assert hit.locator == "vacation.md" and "30 days" in hit.text

    (docs / "long.md").unlink()
    deleted = sync_kb(catalog, kb)
    assert deleted.deleted == 1 and deleted.chunks_embedded == 0
    assert deleted.chunks_deleted == total_chunks - 3
    assert store.count(get_kb(catalog, kb)) == 3
    assert all(hit.locator != "long.md" for hit in store.search(get_kb(catalog, kb), "security team reviews item", k=3))
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Document)) == 3
        latest = session.scalar(select(Snapshot).order_by(Snapshot.id.desc()))
        members = session.scalar(
            select(func.count()).select_from(SnapshotDocument).where(SnapshotDocument.snapshot_id == latest.id)
        )
        assert latest.document_count == members == 3


def test_bad_documents_are_recorded_and_the_rest_syncs(catalog, store, kb, docs, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("KADAPT_MAX_DOCUMENT_BYTES", "5000")
    from kadapt.settings import get_settings

    get_settings.cache_clear()
    (docs / "long.md").write_text("short now\n")
    (docs / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<garbage>>\n%%EOF trailing nonsense")
    (docs / "binary.md").write_bytes(bytes(range(256)) * 4)
    (docs / "latin1.txt").write_bytes("Caf\xe9 menu: soup of the day".encode("latin-1"))
    (docs / "huge.txt").write_text("x" * 6000)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.md").write_text("top secret\n")
    (docs / "escape.md").symlink_to(outside / "secret.md")

    stats = sync_kb(catalog, kb)
    assert stats.added == 4 and stats.failed == 5
    status = kb_status(catalog, store, kb)
    errors = {error["locator"]: error["message"] for error in status["errors"]}
    assert set(errors) == {"corrupt.pdf", "binary.md", "latin1.txt", "huge.txt", "escape.md"}
    assert "PDF" in errors["corrupt.pdf"]
    assert "binary" in errors["binary.md"]
    assert "UTF-8" in errors["latin1.txt"] and "offset 3" in errors["latin1.txt"]
    assert "6,000 bytes" in errors["huge.txt"] and "KADAPT_MAX_DOCUMENT_BYTES" in errors["huge.txt"]
    assert "outside the allowed roots" in errors["escape.md"]
    assert status["documents"] == 4 and status["vectors"] == status["chunks"]

    # fixing a file clears its error on the next sync
    (docs / "latin1.txt").write_text("Café menu: soup of the day")
    fixed = sync_kb(catalog, kb)
    assert fixed.added == 1 and fixed.failed == 4


def test_a_document_that_becomes_unreadable_keeps_its_last_good_version(catalog, store, kb, docs):
    sync_kb(catalog, kb)
    (docs / "printer.txt").write_bytes(b"\xff\xfe\x00broken")
    stats = sync_kb(catalog, kb)
    assert stats.failed == 1 and stats.deleted == 0 and not stats.snapshot_created
    assert top_locator(store, "what is the printer called") == "printer.txt"
    with catalog.session() as session:
        assert session.scalar(select(DocumentError.locator)) == "printer.txt"


def test_removing_a_source_removes_its_documents(catalog, store, kb):
    sync_kb(catalog, kb)
    remove_source(catalog, store, 1)
    assert store.count(get_kb(catalog, kb)) == 0
    assert kb_status(catalog, store, kb)["documents"] == 0
    assert snapshot_count(catalog) == 2  # the now-empty KB is a new state


def test_crash_between_chroma_and_catalog_is_repaired_by_the_next_sync(catalog, store, kb, docs, monkeypatch):
    import kadapt.ingest

    original = kadapt.ingest.SourceSync._flush
    calls = {"n": 0}

    def crash_after_chroma_write(self):
        calls["n"] += 1
        self.store.add_chunks(self.kb, self.batch.chunk_ids, self.batch.texts, self.batch.metadatas)
        raise KeyboardInterrupt("simulated crash after the chunks were written")

    monkeypatch.setattr(kadapt.ingest.SourceSync, "_flush", crash_after_chroma_write)
    with pytest.raises(KeyboardInterrupt):
        sync_kb(catalog, kb)
    assert calls["n"] == 1 and store.count(get_kb(catalog, kb)) > 0
    assert kb_status(catalog, store, kb)["documents"] == 0
    monkeypatch.setattr(kadapt.ingest.SourceSync, "_flush", original)
    stats = sync_kb(catalog, kb)
    assert stats.added == 4
    status = kb_status(catalog, store, kb)
    assert status["vectors"] == status["chunks"]  # no orphan or duplicate chunks


def test_chunks_an_interrupted_sync_left_for_a_document_that_then_left_the_source_are_removed(
    catalog, store, kb, docs, monkeypatch
):
    import kadapt.ingest

    original = kadapt.ingest.SourceSync._flush

    def crash_after_chroma_write(self):
        self.store.add_chunks(self.kb, self.batch.chunk_ids, self.batch.texts, self.batch.metadatas)
        raise KeyboardInterrupt("simulated crash after the chunks were written")

    monkeypatch.setattr(kadapt.ingest.SourceSync, "_flush", crash_after_chroma_write)
    with pytest.raises(KeyboardInterrupt):
        sync_kb(catalog, kb)
    monkeypatch.setattr(kadapt.ingest.SourceSync, "_flush", original)
    (docs / "printer.txt").unlink()  # leaves the source before the next sync: the catalog never held it
    assert any(hit.locator == "printer.txt" for hit in store.search(get_kb(catalog, kb), "office printer badge", k=20))

    stats = sync_kb(catalog, kb)

    assert stats.added == 3
    status = kb_status(catalog, store, kb)
    assert status["vectors"] == status["chunks"]  # the orphaned printer chunks are gone
    assert all(hit.locator != "printer.txt" for hit in store.search(get_kb(catalog, kb), "office printer badge", k=20))
    with catalog.session() as session:  # and the mark of the unfinished sync is cleared
        assert all(kadapt.ingest.SYNC_IN_PROGRESS not in (row.state or {}) for row in session.scalars(select(Source)))


def test_a_document_holding_nul_characters_syncs_on_either_catalog(catalog, store, kadapt_env):
    """PostgreSQL's text columns refuse NUL; a document (or a title) with one must not fail the sync there."""
    import json

    from kadapt.settings import get_settings

    lines = kadapt_env / "docs.jsonl"
    record = {"id": "nul", "text": "Badge\x00 readers open at 7:00.", "metadata": {"title": "Doors\x00"}}
    lines.write_text(json.dumps(record) + "\n")
    create_kb(catalog, "nul")
    add_source(catalog, get_settings(), "nul", "jsonl", {"path": str(lines)})

    stats = sync_kb(catalog, "nul")

    assert (stats.added, stats.failed) == (1, 0)
    with catalog.session() as session:
        text = session.scalar(select(Document.text))
    assert text.replace("\x00", "\ufffd") == "Badge\ufffd readers open at 7:00."  # as stored on PostgreSQL
    assert store.search(get_kb(catalog, "nul"), "badge readers", k=1)[0].document_id
    again = sync_kb(catalog, "nul")
    assert (again.added, again.updated, again.failed) == (0, 0, 0)  # the next sync sees it unchanged

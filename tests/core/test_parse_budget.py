"""No document can stall the server (finding 5): PDF, Office, CSV, e-mail and HTML are parsed in a worker process
with a time and a memory budget, and bombs (zip, page count, slow or memory-hungry content) are document errors."""

from __future__ import annotations

import io
import zipfile

import docx
import pytest
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter
from pypdf.generic import DecodedStreamObject, NameObject
from sqlalchemy import select

from kadapt.catalog import Document, DocumentError
from kadapt.errors import DocumentLoadError
from kadapt.kbs import add_source, create_kb
from kadapt.parsing import parse_bytes, parse_document
from kadapt.settings import Settings, get_settings
from kadapt.sync import sync_kb


def docx_bytes(text: str, padding: int = 0) -> bytes:
    """A real .docx; with ``padding``, a part of that many zero bytes besides (compressed ~1000:1)."""
    document = docx.Document()
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    if not padding:
        return out.getvalue()
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/media/padding.bin", b"\0" * padding)
    return out.getvalue()


def pdf_bytes(pages: int) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for number in range(pages):
        pdf.add_page()
        pdf.cell(0, 6, f"Page {number}: the archive keeps every page.")
    return bytes(pdf.output())


def heavy_pdf(operators: int) -> bytes:
    """One page whose compressed content stream (a few KB) holds ``operators`` text operators: pure-Python
    text extraction spends seconds per few hundred thousand."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(1))))
    page = writer.pages[0]
    font = next(iter(page["/Resources"]["/Font"].keys()))
    stream = DecodedStreamObject()
    stream.set_data(b"BT " + font.encode() + b" 12 Tf " + b"(a) Tj " * operators + b"ET")
    page[NameObject("/Contents")] = writer._add_object(stream.flate_encode())
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_docx_unpacking_to_over_100_times_its_size_is_a_zip_bomb():
    bomb = docx_bytes("Quarterly figures.", padding=50_000_000)
    assert len(bomb) < 200_000  # well under every size limit: only the ratio tells it apart
    with pytest.raises(DocumentLoadError, match=r"times its size .* zip bomb"):
        parse_bytes(bomb, "figures.docx", max_bytes=20_000_000)
    assert parse_bytes(docx_bytes("Quarterly figures."), "figures.docx", max_bytes=20_000_000).text == (
        "Quarterly figures."
    )


def test_a_pdf_over_the_page_limit_is_refused():
    settings = Settings(max_pdf_pages=5)
    with pytest.raises(DocumentLoadError, match=r"6 pages, over the limit of 5 \(KADAPT_MAX_PDF_PAGES\)"):
        parse_document(pdf_bytes(6), "archive.pdf", settings=settings)
    assert "Page 4" in parse_document(pdf_bytes(5), "archive.pdf", settings=settings).text


def test_a_pdf_over_the_time_budget_is_stopped():
    slow = heavy_pdf(2_000_000)  # minutes of extraction in the parser
    with pytest.raises(DocumentLoadError, match=r"longer than 1 seconds.*KADAPT_PARSE_TIMEOUT_SECONDS"):
        parse_document(slow, "slow.pdf", settings=Settings(parse_timeout_seconds=1))


def test_a_document_over_the_memory_budget_is_refused():
    # a small page whose parse tree takes hundreds of MB: BeautifulSoup spends ~1 KB a tag
    page = b"<html><body>" + b"<p>a</p>" * 200_000 + b"</body></html>"
    with pytest.raises(DocumentLoadError, match=r"more than 64 MB of memory.*KADAPT_PARSE_MEMORY_MB"):
        parse_document(page, "tags.html", settings=Settings(parse_memory_mb=64, parse_timeout_seconds=120))
    # the worker that failed is replaced: the next document parses
    assert parse_document(b"<p>fine</p>", "ok.html", settings=Settings(parse_memory_mb=64)).text == "fine"


def test_the_parse_worker_returns_the_links_of_a_page():
    parsed = parse_document(b'<title>T</title><a href="/a">a</a> <a href="b.html">b</a>', "p.html", settings=Settings())
    assert (parsed.title, parsed.links) == ("T", ["/a", "b.html"])


def test_a_sync_records_every_bomb_as_a_document_error_and_goes_on(kadapt_env, catalog, monkeypatch):
    monkeypatch.setenv("KADAPT_MAX_PDF_PAGES", "5")
    monkeypatch.setenv("KADAPT_PARSE_TIMEOUT_SECONDS", "2")
    get_settings.cache_clear()
    root = kadapt_env / "docs"
    root.mkdir()
    (root / "bomb.docx").write_bytes(docx_bytes("Quarterly figures.", padding=50_000_000))
    (root / "long.pdf").write_bytes(pdf_bytes(6))
    (root / "slow.pdf").write_bytes(heavy_pdf(2_000_000))
    # a megabyte of spaces: the old tidying regex spent hours on it, holding the interpreter
    (root / "spaces.md").write_text("# Spaces\n\nstart" + " " * 1_000_000 + "end\nlast line\n")
    (root / "good.md").write_text("# Good\n\nThe canteen opens at noon.\n")
    (root / "good.docx").write_bytes(docx_bytes("Badges are renewed every March."))
    create_kb(catalog, "bombs")
    add_source(catalog, get_settings(), "bombs", "files", {"path": str(root)})

    stats = sync_kb(catalog, "bombs")

    with catalog.session() as session:
        errors = {
            row.locator: row.message for row in session.execute(select(DocumentError.locator, DocumentError.message))
        }
        texts = {row.locator: row.text for row in session.execute(select(Document.locator, Document.text))}
    assert set(errors) == {"bomb.docx", "long.pdf", "slow.pdf"}
    assert "zip bomb" in errors["bomb.docx"]
    assert "KADAPT_MAX_PDF_PAGES" in errors["long.pdf"]
    assert "KADAPT_PARSE_TIMEOUT_SECONDS" in errors["slow.pdf"]
    assert set(texts) == {"spaces.md", "good.md", "good.docx"}
    assert texts["good.docx"] == "Badges are renewed every March."
    assert texts["spaces.md"].endswith("end\nlast line")
    assert (stats.added, stats.failed) == (3, 3)

"""Presentations, workbooks, CSV files and e-mails become text a KB can answer from; a file of one of them that
cannot be read, or yields no text, is a document error while the rest of the sync goes on."""

from __future__ import annotations

import io
import sys
import zipfile
from email.message import EmailMessage

import pytest
from fpdf import FPDF
from openpyxl import Workbook
from pptx import Presentation
from pptx.util import Inches
from sqlalchemy import select

from kadapt.catalog import Document, DocumentError
from kadapt.errors import DocumentLoadError
from kadapt.kbs import add_source, create_kb, get_kb
from kadapt.parsing import parse_bytes, parse_document
from kadapt.settings import Settings, get_settings
from kadapt.sync import sync_kb


def pptx_bytes() -> bytes:
    presentation = Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])  # title and content
    slide.shapes.title.text = "Travel policy"
    slide.placeholders[1].text_frame.text = "Trains are booked in second class."
    slide.notes_slide.notes_text_frame.text = "Mention the night-train exception."
    slide = presentation.slides.add_slide(presentation.slide_layouts[5])  # title only
    slide.shapes.title.text = "Allowances"
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1)).table
    for row, cells in enumerate([("City", "Daily allowance"), ("Oslo", "95 EUR")]):
        for column, text in enumerate(cells):
            table.cell(row, column).text = text
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def xlsx_bytes(padding: int = 0) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Suppliers"
    sheet.append(["Supplier", "Contact", "Payment days"])
    sheet.append(["Nordpaper", "Ines Alder", 45])
    sheet.append([])
    sheet.append(["Blueline", None, "=30+15"])  # a formula: its last computed value is read (none here)
    workbook.create_sheet("Empty")
    out = io.BytesIO()
    workbook.save(out)
    if padding:
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("xl/media/padding.bin", b"\0" * padding)
    return out.getvalue()


def eml_bytes(html: bool = False) -> bytes:
    message = EmailMessage()
    message["From"] = "Facilities <facilities@example.com>"
    message["To"] = "all-staff@example.com"
    message["Subject"] = "Car park closed on Friday"
    message["Date"] = "Mon, 30 Nov 2026 09:00:00 +0000"
    body = "The car park on Elm Street is closed on Friday for resurfacing."
    if html:
        message.set_content(f"<html><body><p>{body}</p><script>alert(1)</script></body></html>", subtype="html")
    else:
        message.set_content(body)
        message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="map.pdf")
    return bytes(message)


def blank_pdf() -> bytes:
    pdf = FPDF()
    pdf.add_page()  # a page with no text layer and nothing on it
    return bytes(pdf.output())


def scanned_pdf() -> bytes:
    """A PDF whose one page is an image of two typed lines and has no text layer, as a scanner writes it."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (1700, 400), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    draw.text((40, 60), "Badges are renewed every March.", fill=0, font=font)
    draw.text((40, 200), "The canteen opens at noon.", fill=0, font=font)
    png = io.BytesIO()
    image.save(png, format="PNG")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(png, x=10, y=10, w=190)
    return bytes(pdf.output())


def test_a_presentation_gives_its_slides_tables_and_notes():
    parsed = parse_document(pptx_bytes(), "travel.pptx", settings=Settings())
    assert parsed.title == "Travel policy"
    assert parsed.text.splitlines()[:3] == [
        "Slide 1: Travel policy",
        "Trains are booked in second class.",
        "Notes: Mention the night-train exception.",
    ]
    assert "Slide 2: Allowances" in parsed.text
    assert "City | Daily allowance\nOslo | 95 EUR" in parsed.text


def test_a_workbook_gives_each_sheet_as_a_text_table():
    parsed = parse_document(xlsx_bytes(), "suppliers.xlsx", settings=Settings())
    assert parsed.text == (
        "Sheet: Suppliers\nSupplier | Contact | Payment days\nNordpaper | Ines Alder | 45\nBlueline"
    )  # the empty row, the empty sheet, the trailing empty cells and the never-computed formula are left out
    assert parsed.title == "suppliers"


def test_a_csv_file_is_read_with_its_own_delimiter():
    semicolons = b"Room;Seats;Floor\nFjord;12;3\n\nGlacier;40;1\n"
    assert parse_bytes(semicolons, "rooms.csv").text == "Room | Seats | Floor\nFjord | 12 | 3\nGlacier | 40 | 1"
    quoted = b'name,notes\nAtlas,"one, two"\n'
    assert parse_bytes(quoted, "notes.csv").text == "name | notes\nAtlas | one, two"
    with pytest.raises(DocumentLoadError, match="no text could be extracted"):
        parse_bytes(b",,\n,,\n", "empty.csv")
    with pytest.raises(DocumentLoadError, match="not valid UTF-8"):
        parse_bytes(b"caf\xe9;1\n", "latin.csv")


def test_an_email_gives_its_headers_body_and_attachment_names():
    parsed = parse_document(eml_bytes(), "closure.eml", settings=Settings())
    assert parsed.title == "Car park closed on Friday"
    lines = parsed.text.splitlines()
    assert lines[0] == "From: Facilities <facilities@example.com>"
    assert "The car park on Elm Street is closed on Friday for resurfacing." in lines
    assert lines[-1] == "Attachments: map.pdf"
    html = parse_bytes(eml_bytes(html=True), "closure.eml").text
    assert "closed on Friday for resurfacing." in html and "alert" not in html and "<p>" not in html
    with pytest.raises(DocumentLoadError, match="not an e-mail"):
        parse_bytes(b"\n\njust some words\n", "note.eml")


def test_a_sheet_that_claims_every_cell_is_read_by_the_cells_it_holds():
    workbook = Workbook()
    for number in range(20_000):
        workbook.active.append([f"item {number}", number])
    out = io.BytesIO()
    workbook.save(out)
    with zipfile.ZipFile(out) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"]
    parts["xl/worksheets/sheet1.xml"] = sheet.replace(
        b'<dimension ref="A1:B20000"/>', b'<dimension ref="A1:XFD1048576"/>'
    )
    assert parts["xl/worksheets/sheet1.xml"] != sheet
    claimed = io.BytesIO()
    with zipfile.ZipFile(claimed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    # a few hundred KB claiming every column: each of its rows padded to 16,384 cells would take minutes and
    # gigabytes, past the parse budget; the cells it holds take a second
    parsed = parse_document(claimed.getvalue(), "claims.xlsx", settings=Settings(parse_timeout_seconds=20))
    assert parsed.text.splitlines()[1:3] == ["item 0 | 0", "item 1 | 1"] and len(parsed.text.splitlines()) == 20_001


def test_a_csv_cell_may_be_larger_than_the_csv_modules_default_limit():
    cell = "x" * 200_000
    assert parse_document(f"note\n{cell}\n".encode(), "big.csv", settings=Settings()).text == f"note\n{cell}"


def test_broken_and_textless_files_are_errors_that_say_what_is_wrong():
    with pytest.raises(DocumentLoadError, match=r"not a readable \.pptx"):
        parse_bytes(b"PK\x03\x04 not really a zip", "deck.pptx")
    with pytest.raises(DocumentLoadError, match=r"not a readable \.xlsx"):
        parse_bytes(xlsx_bytes()[:600], "cut.xlsx")
    with pytest.raises(DocumentLoadError, match=r"the \.xlsx unpacks to .* zip bomb"):
        parse_bytes(xlsx_bytes(padding=50_000_000), "bomb.xlsx", max_bytes=20_000_000)
    with pytest.raises(DocumentLoadError, match="no text layer and OCR found no text on its pages"):
        parse_document(blank_pdf(), "blank.pdf", settings=Settings())
    with pytest.raises(DocumentLoadError, match=r"no text layer \(scanned pages\?\) and OCR is off"):
        parse_document(scanned_pdf(), "scan.pdf", settings=Settings(pdf_ocr=False))


def test_a_scanned_pdf_is_read_by_ocr_and_without_the_ocr_extra_says_how_to_get_it(monkeypatch):
    parsed = parse_document(scanned_pdf(), "scan.pdf", settings=Settings())
    assert parsed.text.splitlines() == ["Badges are renewed every March.", "The canteen opens at noon."]

    import kadapt.parsing

    kadapt.parsing._ocr_engine.cache_clear()
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # the extra not installed: its import fails
    try:
        with pytest.raises(DocumentLoadError, match=r"install kadapt's ocr extra \(pip install 'kadapt\[ocr\]'"):
            parse_bytes(scanned_pdf(), "scan.pdf", ocr=True)
    finally:
        kadapt.parsing._ocr_engine.cache_clear()


def test_a_sync_reads_the_new_formats_and_records_the_broken_ones(kadapt_env, catalog, store):
    root = kadapt_env / "docs"
    root.mkdir()
    (root / "travel.pptx").write_bytes(pptx_bytes())
    (root / "suppliers.xlsx").write_bytes(xlsx_bytes())
    (root / "rooms.csv").write_text("Room;Seats\nFjord;12\nGlacier;40\n")
    (root / "closure.eml").write_bytes(eml_bytes())
    (root / "scan.pdf").write_bytes(blank_pdf())
    (root / "bomb.xlsx").write_bytes(xlsx_bytes(padding=50_000_000))
    (root / "broken.pptx").write_bytes(pptx_bytes()[:2000])
    create_kb(catalog, "formats")
    # .csv and .eml are read only when included (data exports and saved mail are not documents by default)
    include = ["*.pptx", "*.xlsx", "*.csv", "*.eml", "*.pdf"]
    add_source(catalog, get_settings(), "formats", "files", {"path": str(root), "include": include})

    stats = sync_kb(catalog, "formats")

    with catalog.session() as session:
        errors = {
            row.locator: row.message for row in session.execute(select(DocumentError.locator, DocumentError.message))
        }
        titles = {row.locator: row.title for row in session.execute(select(Document.locator, Document.title))}
    assert set(errors) == {"scan.pdf", "bomb.xlsx", "broken.pptx"}
    assert "no text layer and OCR found no text" in errors["scan.pdf"]
    assert "zip bomb" in errors["bomb.xlsx"]
    assert "not a readable .pptx" in errors["broken.pptx"]
    assert titles == {
        "travel.pptx": "Travel policy",
        "suppliers.xlsx": "suppliers",
        "rooms.csv": "rooms",
        "closure.eml": "Car park closed on Friday",
    }
    assert (stats.added, stats.failed) == (4, 3)
    kb = get_kb(catalog, "formats")
    assert store.search(kb, "daily allowance for a trip to Oslo", k=1)[0].locator == "travel.pptx"
    assert store.search(kb, "how many days until Nordpaper is paid", k=1)[0].locator == "suppliers.xlsx"
    assert store.search(kb, "is the car park open on Friday", k=1)[0].locator == "closure.eml"

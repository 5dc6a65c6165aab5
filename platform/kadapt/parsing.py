"""Turn file bytes into text, by format, with well-kept parsers: pypdf, python-docx, BeautifulSoup.

Every failure is a :class:`~kadapt.errors.DocumentLoadError` whose message says what is wrong with the
file; callers record it and go on with the rest of the sync. Connectors pass ``KADAPT_MAX_DOCUMENT_BYTES``
as ``max_bytes``: it bounds the file and the text extracted from it, which a compressed format (PDF,
.docx) can make far larger than the file.

Connectors call :func:`parse_document`, which parses PDF, Office, CSV, e-mail and HTML in a worker process (a
pebble pool started with ``spawn``) under a time budget (``KADAPT_PARSE_TIMEOUT_SECONDS``: past it the worker is
killed) and a memory budget (``KADAPT_PARSE_MEMORY_MB``, an address-space limit set in the worker), so that
no document can hold the server's interpreter or memory; plain text and Markdown, tidied in linear time, are
parsed in the caller's process, which spares them the round trip.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import re
import threading
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING

from kadapt.errors import ConfigError, DocumentLoadError

if TYPE_CHECKING:
    from kadapt.settings import Settings

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ParsedText",
    "check_size",
    "parse_bytes",
    "parse_document",
    "parse_html",
    "suffix_for_content_type",
    "tidy_text",
]

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst", ".text"}
HTML_SUFFIXES = {".html", ".htm"}
OFFICE_SUFFIXES = {".docx", ".pptx", ".xlsx"}  # zip packages, checked for zip bombs before they are read
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | OFFICE_SUFFIXES | {".pdf", ".csv", ".eml"}
# A .docx unpacks to several times its size (an empty one from Word or python-docx to ~0.8 MB of styles and
# themes); far more than that is a zip bomb, refused before it is unpacked.
_DOCX_UNPACKED_FACTOR = 10
_DOCX_UNPACKED_FLOOR = 64_000_000
# ... and whatever the limit, a .docx that unpacks to more than this many times its own size is a zip bomb:
# Word's own files stay under ~20x (text compresses ~5x; an empty document is ~0.8 MB of styles in ~40 KB)
_DOCX_RATIO_LIMIT = 100
_DOCX_RATIO_FLOOR = 8_000_000  # below this, unpacking costs nothing worth refusing a small file for
_PARSE_WORKERS = 2


@dataclass
class ParsedText:
    text: str
    title: str = ""
    links: list[str] = field(default_factory=list)  # an HTML page's hrefs, as written (not yet resolved)


def suffix_for_content_type(content_type: str) -> str | None:
    media_type = content_type.split(";")[0].strip().lower()
    return {
        "text/html": ".html",
        "application/xhtml+xml": ".html",
        "text/plain": ".txt",
        "text/markdown": ".md",
        "application/pdf": ".pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
        "text/csv": ".csv",
        "message/rfc822": ".eml",
    }.get(media_type)


def check_size(size: int, max_bytes: int | None, what: str = "file") -> None:
    """Refuse a document of ``size`` bytes over ``max_bytes``, naming both and the setting."""
    if max_bytes is not None and size > max_bytes:
        raise DocumentLoadError(
            f"{what} is {size:,} bytes, over the limit of {max_bytes:,} (KADAPT_MAX_DOCUMENT_BYTES)"
        )


def _suffix(name: str, suffix: str | None) -> str:
    suffix = (suffix or PurePath(name).suffix).lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentLoadError(
            f"unsupported file type {suffix or '(none)'!r}; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    return suffix


def parse_document(data: bytes, name: str, *, settings: Settings, suffix: str | None = None) -> ParsedText:
    """Parse ``data`` (the content of ``name``) as :func:`parse_bytes` does, within the document limits of
    ``settings``: PDF, Office, CSV, e-mail and HTML in a worker process with a time and a memory budget; a document
    over a budget is a :class:`~kadapt.errors.DocumentLoadError` naming the budget and its setting."""
    suffix = _suffix(name, suffix)
    options = {"suffix": suffix, "max_bytes": settings.max_document_bytes, "max_pdf_pages": settings.max_pdf_pages}
    if suffix == ".pdf":
        options["ocr"] = settings.pdf_ocr
    check_size(len(data), settings.max_document_bytes)
    if suffix in TEXT_SUFFIXES:
        return parse_bytes(data, name, **options)
    from concurrent.futures.process import BrokenProcessPool

    from pebble import ProcessExpired

    timeout, memory_mb = settings.parse_timeout_seconds, settings.parse_memory_mb
    future = _worker_pool(memory_mb).schedule(_parse_in_worker, args=(data, name), kwargs=options, timeout=timeout)
    try:
        return future.result()
    except TimeoutError:
        raise DocumentLoadError(
            f"parsing took longer than {timeout:g} seconds, the limit (KADAPT_PARSE_TIMEOUT_SECONDS); the parser "
            "was stopped. Split the document, or raise the limit"
        ) from None
    except MemoryError:
        raise DocumentLoadError(
            f"parsing needed more than {memory_mb:,} MB of memory, the limit (KADAPT_PARSE_MEMORY_MB); split the "
            "document, or raise the limit"
        ) from None
    except ProcessExpired as exc:
        raise DocumentLoadError(
            f"the parser process died (exit code {exc.exitcode}) on it, most likely over the memory limit of "
            f"{memory_mb:,} MB (KADAPT_PARSE_MEMORY_MB)"
        ) from None
    except BrokenProcessPool as exc:  # the workers could not start: no document's fault
        raise ConfigError(
            f"the document parser processes could not start ({exc}); a script that syncs must guard its "
            "entry point with `if __name__ == '__main__':` (worker processes import the main module)"
        ) from None


def _parse_in_worker(data: bytes, name: str, **options) -> ParsedText:
    """:func:`parse_bytes` in a parse worker: a parser that fails in a way it did not foresee (hostile input
    reaches corners of pypdf and lxml) fails the document, not the sync."""
    try:
        return parse_bytes(data, name, **options)
    except (DocumentLoadError, MemoryError):
        raise
    except Exception as exc:
        raise DocumentLoadError(f"the parser failed on it ({type(exc).__name__}: {exc})") from None


_pools: dict[int, object] = {}  # memory budget (MB) -> pebble ProcessPool; started on first use
_pools_lock = threading.Lock()


def _worker_pool(memory_mb: int):
    import multiprocessing

    from pebble import ProcessPool

    with _pools_lock:
        pool = _pools.get(memory_mb)
        if pool is None or not pool.active:  # type: ignore[attr-defined]
            # spawn, not fork: the parent may run torch and other threads that a fork would copy mid-lock
            pool = ProcessPool(
                max_workers=_PARSE_WORKERS,
                initializer=_start_worker,
                initargs=(memory_mb,),
                context=multiprocessing.get_context("spawn"),
            )
            _pools[memory_mb] = pool
        return pool


@atexit.register
def _stop_pools() -> None:
    with _pools_lock:
        for pool in _pools.values():
            pool.stop()  # type: ignore[attr-defined]
            pool.join()  # type: ignore[attr-defined]
        _pools.clear()


def _start_worker(memory_mb: int) -> None:
    """Load the parsers, then cap the worker's address space at what it holds now plus ``memory_mb``: an
    allocation past it raises MemoryError (or kills the worker), never touching the server's memory."""
    import resource

    import bs4  # noqa: F401
    import docx  # noqa: F401
    import lxml.etree  # noqa: F401
    import openpyxl  # noqa: F401 - with numpy, over 100 MB of address space: not a document's share
    import pptx  # noqa: F401
    import pypdf  # noqa: F401

    with contextlib.suppress(ImportError):  # the optional OCR of scanned PDF pages, its model loaded once
        _ocr_engine()

    try:
        with open("/proc/self/statm") as statm:  # Linux: address space in pages, first field
            current = int(statm.read().split()[0]) * resource.getpagesize()
    except OSError:  # no /proc (macOS): only the time budget applies
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = current + memory_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def parse_bytes(
    data: bytes,
    name: str,
    *,
    suffix: str | None = None,
    max_bytes: int | None = None,
    max_pdf_pages: int | None = None,
    ocr: bool = False,
) -> ParsedText:
    """Parse ``data`` (the content of ``name``) by its suffix into text and a title, in this process; with
    ``max_bytes``, neither ``data`` nor the text extracted from it may be larger, and a PDF may have at most
    ``max_pdf_pages`` pages; with ``ocr``, a PDF's pages without a text layer are read by OCR (the ``ocr``
    extra). Connectors call :func:`parse_document` instead, which adds time and memory budgets."""
    suffix = _suffix(name, suffix)
    check_size(len(data), max_bytes)
    if suffix == ".pdf":
        parsed = _parse_pdf(data, max_bytes, max_pdf_pages, ocr=ocr)
    elif suffix in OFFICE_SUFFIXES:
        _check_unpacked(data, max_bytes, suffix)
        parsed = _OFFICE_PARSERS[suffix](data)
    elif suffix == ".csv":
        parsed = _parse_csv(_decode(data))
    elif suffix == ".eml":
        parsed = _parse_eml(data)
    elif suffix in HTML_SUFFIXES:
        parsed = parse_html(_decode(data))
    else:
        text = _decode(data)
        parsed = ParsedText(text=text, title=_markdown_title(text))
    parsed.text = tidy_text(parsed.text)
    check_size(len(parsed.text.encode()), max_bytes, "the text extracted from it")
    if not parsed.text:
        raise DocumentLoadError("no text could be extracted (empty, or a scanned PDF without a text layer)")
    if not parsed.title:
        parsed.title = PurePath(name).stem.replace("-", " ").replace("_", " ")
    return parsed


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentLoadError("looks like a binary file (contains NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentLoadError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
        ) from None


def _markdown_title(text: str) -> str:
    for line in text.splitlines()[:20]:
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def tidy_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # trailing blanks per line; a regex over the whole text backtracks quadratically on long runs of spaces
    text = "\n".join(line.rstrip(" \t\u00a0") for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def parse_html(html: str) -> ParsedText:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "lxml")
    title = soup.title.get_text(strip=True) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "template", "svg", "nav", "footer", "head"]):
        tag.decompose()
    body = soup.body or soup
    text = body.get_text("\n", strip=True)
    if not title:
        heading = soup.find(["h1", "h2"])
        title = heading.get_text(strip=True) if heading else ""
    links = [str(anchor["href"]) for anchor in soup.find_all("a", href=True)]
    return ParsedText(text=text, title=title, links=links)


def _parse_pdf(
    data: bytes, max_bytes: int | None = None, max_pages: int | None = None, *, ocr: bool = False
) -> ParsedText:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DocumentLoadError("the PDF is encrypted; export an unencrypted copy")
        if max_pages is not None and len(reader.pages) > max_pages:
            raise DocumentLoadError(
                f"the PDF has {len(reader.pages):,} pages, over the limit of {max_pages:,} (KADAPT_MAX_PDF_PAGES); "
                "split it, or raise the limit"
            )
        pages, size = [], 0
        for page in reader.pages:  # stop extracting as soon as the text is over the limit
            pages.append(page.extract_text() or "")
            size += len(pages[-1].encode())
            check_size(size, max_bytes, f"the text of its first {len(pages)} page(s)")
        title = ""
        if reader.metadata and reader.metadata.title:
            title = str(reader.metadata.title)
    except DocumentLoadError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentLoadError(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    scanned = [number for number, text in enumerate(pages) if not text.strip()]
    if scanned and ocr:
        for number, text in _ocr_pages(data, scanned).items():
            pages[number] = text
            size += len(text.encode())
            check_size(size, max_bytes, "the text of its pages, read by OCR")
    if pages and not any(text.strip() for text in pages):
        raise DocumentLoadError(_no_text_layer(ocr))
    return ParsedText(text="\n\n".join(pages), title=title)


def _no_text_layer(ocr: bool) -> str:
    """Why a PDF without a text layer (scanned pages) gave no text: OCR off, or not installed."""
    if not ocr:
        return "the PDF has no text layer (scanned pages?) and OCR is off (KADAPT_PDF_OCR=false)"
    try:
        _ocr_engine()
    except ImportError:
        return (
            "the PDF has no text layer (scanned pages?); install kadapt's ocr extra (pip install 'kadapt[ocr]': "
            "rapidocr-onnxruntime, pypdfium2) to read it by OCR"
        )
    return "the PDF has no text layer and OCR found no text on its pages"


@functools.cache
def _ocr_engine():
    """The OCR engine (RapidOCR's ONNX models, shipped in its wheel); ImportError without the ocr extra."""
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


def _ocr_pages(data: bytes, numbers: list[int]) -> dict[int, str]:
    """The text OCR reads on pages ``numbers`` of a PDF (rendered at 144 dpi), lines in reading order; {}
    without the ocr extra (the caller says so if no page has text)."""
    try:
        import pypdfium2 as pdfium

        engine = _ocr_engine()
    except ImportError:
        return {}
    document = pdfium.PdfDocument(data)
    texts = {}
    try:
        for number in numbers:
            image = document[number].render(scale=2).to_pil()
            found, _ = engine(image)
            texts[number] = "\n".join(line[1] for line in found or [])
    finally:
        document.close()
    return texts


def _check_unpacked(data: bytes, max_bytes: int | None, suffix: str) -> None:
    """Refuse an Office file (a zip package) that unpacks to far more than a document of its size: a zip bomb.
    The sizes a zip declares bound what reading it unpacks (the parsers read no more than declared)."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError) as exc:
        raise DocumentLoadError(f"not a readable {suffix} file ({type(exc).__name__}: {exc})") from None
    if max_bytes is not None:  # first the bound a setting controls, so the message names it
        allowed = max(_DOCX_UNPACKED_FACTOR * max_bytes, _DOCX_UNPACKED_FLOOR)
        if unpacked > allowed:
            raise DocumentLoadError(
                f"the {suffix} unpacks to {unpacked:,} bytes, over the {allowed:,} allowed for a document of "
                f"{max_bytes:,} bytes (KADAPT_MAX_DOCUMENT_BYTES); it looks like a zip bomb"
            )
    ratio_allowed = max(_DOCX_RATIO_LIMIT * len(data), _DOCX_RATIO_FLOOR)
    if unpacked > ratio_allowed:
        raise DocumentLoadError(
            f"the {suffix} unpacks to {unpacked:,} bytes, {unpacked // max(len(data), 1):,} times its size of "
            f"{len(data):,} bytes (at most {_DOCX_RATIO_LIMIT}x is accepted); it looks like a zip bomb"
        )


def _parse_docx(data: bytes) -> ParsedText:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentLoadError(f"not a readable .docx file ({type(exc).__name__}: {exc})") from None
    parts = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text.strip() for cell in row.cells))
    title = document.core_properties.title or ""
    if not title:
        for paragraph in document.paragraphs:
            if paragraph.style is not None and paragraph.style.name.startswith(("Title", "Heading")):
                title = paragraph.text.strip()
                break
    return ParsedText(text="\n".join(parts), title=title)


def _parse_pptx(data: bytes) -> ParsedText:
    """A presentation: each slide's title, text boxes, tables and speaker notes, under a "Slide N" line."""
    import zipfile

    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    try:
        presentation = Presentation(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentLoadError(f"not a readable .pptx file ({type(exc).__name__}: {exc})") from None
    parts, first_title = [], ""
    for number, slide in enumerate(presentation.slides, 1):
        heading = slide.shapes.title.text_frame.text.strip() if slide.shapes.title is not None else ""
        first_title = first_title or heading
        parts.append(f"Slide {number}" + (f": {heading}" if heading else ""))
        for shape in slide.shapes:
            if shape == slide.shapes.title:
                continue
            if shape.has_text_frame and shape.text_frame.text.strip():
                parts.append(shape.text_frame.text)
            if shape.has_table:
                parts += [" | ".join(cell.text.strip() for cell in row.cells) for row in shape.table.rows]
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                parts.append(f"Notes: {notes}")
        parts.append("")
    return ParsedText(text="\n".join(parts), title=presentation.core_properties.title or first_title)


def _parse_xlsx(data: bytes) -> ParsedText:
    """A workbook: each sheet as a text table (cells joined by " | ", empty rows left out), under its name."""
    import zipfile

    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise DocumentLoadError(f"not a readable .xlsx file ({type(exc).__name__}: {exc})") from None
    parts = []
    try:
        for sheet in workbook.worksheets:
            # the rows the sheet holds, not the size its <dimension> claims (a few KB can claim every cell
            # of a sheet, 17 billion empty ones to walk)
            sheet.reset_dimensions()
            rows = [_table_row(row) for row in sheet.iter_rows(values_only=True)]
            rows = [row for row in rows if row]
            if rows:
                parts += [f"Sheet: {sheet.title}", *rows, ""]
        title = workbook.properties.title or ""
    finally:
        workbook.close()
    return ParsedText(text="\n".join(parts), title=title)


def _table_row(cells) -> str:
    """A table row as text: its cells joined by " | ", without the empty ones at its end ("" for an empty row)."""
    values = ["" if cell is None else str(cell).strip() for cell in cells]
    while values and not values[-1]:
        values.pop()
    return " | ".join(values) if any(values) else ""


def _parse_csv(text: str) -> ParsedText:
    """A CSV file as a text table; the delimiter (comma, semicolon, tab, pipe) is sniffed from its start."""
    import csv

    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:  # one column, or no clear delimiter: commas
        dialect = csv.excel
    csv.field_size_limit(max(len(text), 131_072))  # one cell may be the whole file (within KADAPT_MAX_DOCUMENT_BYTES)
    try:
        rows = [_table_row(row) for row in csv.reader(io.StringIO(text), dialect)]
    except csv.Error as exc:
        raise DocumentLoadError(f"not a readable CSV file ({exc})") from None
    return ParsedText(text="\n".join(row for row in rows if row))


def _parse_eml(data: bytes) -> ParsedText:
    """An e-mail: its subject (the title), sender, recipients and date, then its text body (the HTML one as text
    when it has no plain one); attachments are named, not read."""
    from email import message_from_bytes, policy

    message = message_from_bytes(data, policy=policy.default)
    if not message.keys():
        raise DocumentLoadError("not an e-mail message (no headers); save it as .eml")
    headers = [f"{name}: {message[name]}" for name in ("From", "To", "Cc", "Date", "Subject") if message[name]]
    body_part = message.get_body(preferencelist=("plain", "html"))
    body = ""
    if body_part is not None:
        try:
            body = body_part.get_content()
        except (LookupError, UnicodeDecodeError) as exc:
            raise DocumentLoadError(f"the e-mail's body cannot be decoded ({exc})") from None
        if body_part.get_content_subtype() == "html":
            body = parse_html(body).text
    attachments = [part.get_filename() for part in message.iter_attachments() if part.get_filename()]
    parts = [*headers, "", body]
    if attachments:
        parts.append("Attachments: " + ", ".join(attachments))
    return ParsedText(text="\n".join(parts), title=str(message["Subject"] or ""))


_OFFICE_PARSERS = {".docx": _parse_docx, ".pptx": _parse_pptx, ".xlsx": _parse_xlsx}

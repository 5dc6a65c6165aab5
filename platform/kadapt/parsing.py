"""Turn file bytes into text, by format, with well-kept parsers: pypdf, python-docx, BeautifulSoup.

Every failure is a :class:`~kadapt.errors.DocumentLoadError` whose message says what is wrong with the
file; callers record it and go on with the rest of the sync. Connectors pass ``KADAPT_MAX_DOCUMENT_BYTES``
as ``max_bytes``: it bounds the file and the text extracted from it, which a compressed format (PDF,
.docx) can make far larger than the file.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePath

from kadapt.errors import DocumentLoadError

__all__ = [
    "ParsedText",
    "SUPPORTED_SUFFIXES",
    "check_size",
    "parse_bytes",
    "parse_html",
    "suffix_for_content_type",
]

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst", ".text"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".docx"}
# A .docx unpacks to several times its size (an empty one from Word or python-docx to ~0.8 MB of styles and
# themes); far more than that is a zip bomb, refused before it is unpacked.
_DOCX_UNPACKED_FACTOR = 10
_DOCX_UNPACKED_FLOOR = 64_000_000


@dataclass
class ParsedText:
    text: str
    title: str = ""


def suffix_for_content_type(content_type: str) -> str | None:
    media_type = content_type.split(";")[0].strip().lower()
    return {
        "text/html": ".html",
        "application/xhtml+xml": ".html",
        "text/plain": ".txt",
        "text/markdown": ".md",
        "application/pdf": ".pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    }.get(media_type)


def check_size(size: int, max_bytes: int | None, what: str = "file") -> None:
    """Refuse a document of ``size`` bytes over ``max_bytes``, naming both and the setting."""
    if max_bytes is not None and size > max_bytes:
        raise DocumentLoadError(
            f"{what} is {size:,} bytes, over the limit of {max_bytes:,} (KADAPT_MAX_DOCUMENT_BYTES)"
        )


def parse_bytes(data: bytes, name: str, *, suffix: str | None = None, max_bytes: int | None = None) -> ParsedText:
    """Parse ``data`` (the content of ``name``) by its suffix into text and a title; with ``max_bytes``,
    neither ``data`` nor the text extracted from it may be larger."""
    suffix = (suffix or PurePath(name).suffix).lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentLoadError(
            f"unsupported file type {suffix or '(none)'!r}; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    check_size(len(data), max_bytes)
    if suffix == ".pdf":
        parsed = _parse_pdf(data, max_bytes)
    elif suffix == ".docx":
        parsed = _parse_docx(data, max_bytes)
    elif suffix in HTML_SUFFIXES:
        parsed = parse_html(_decode(data))
    else:
        text = _decode(data)
        parsed = ParsedText(text=text, title=_markdown_title(text))
    parsed.text = _tidy(parsed.text)
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


def _tidy(text: str) -> str:
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
    return ParsedText(text=text, title=title)


def _parse_pdf(data: bytes, max_bytes: int | None = None) -> ParsedText:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DocumentLoadError("the PDF is encrypted; export an unencrypted copy")
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
    return ParsedText(text="\n\n".join(pages), title=title)


def _parse_docx(data: bytes, max_bytes: int | None = None) -> ParsedText:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        if max_bytes is not None:  # the sizes a zip declares bound what reading it unpacks
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                unpacked = sum(info.file_size for info in archive.infolist())
            allowed = max(_DOCX_UNPACKED_FACTOR * max_bytes, _DOCX_UNPACKED_FLOOR)
            if unpacked > allowed:
                raise DocumentLoadError(
                    f"the .docx unpacks to {unpacked:,} bytes, over the {allowed:,} allowed for a document of "
                    f"{max_bytes:,} bytes (KADAPT_MAX_DOCUMENT_BYTES); it looks like a zip bomb"
                )
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

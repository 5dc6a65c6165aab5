"""The ``jsonl`` connector: documents from a JSON Lines file, one ``{"text", "id", "metadata"}`` per line.

This is what ``kadapt kb import`` reads, so any external benchmark's documents can enter a KB. ``id`` is
optional but recommended (without it the line number stands in, so reordering the file renames such documents)
and becomes the document's locator; ``metadata`` is kept with the document, and its ``readers`` (a list of group
names) restrict who may read it (kadapt.readers). A bad line is recorded as that document's error while the other
lines are imported. A line longer than ``KADAPT_MAX_DOCUMENT_BYTES`` is skipped without being held in memory; when
its ``id`` comes first, the error is recorded under that id, so the document's last good version stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from langchain_core.documents import Document
from pydantic import Field

from kadapt.contracts import Connector, ConnectorConfig, ListingIncomplete, LoadFailure, Unchanged, hookimpl
from kadapt.errors import InvalidInput

__all__ = ["JsonlConnector"]

_LEADING_ID = re.compile(rb'\s*\{\s*"id"\s*:\s*("(?:[^"\\]|\\.)*")')
_CHUNK = 1 << 20


class JsonlConfig(ConnectorConfig):
    path: Path = Field(description="JSON Lines file to read; must lie under a root its KB's groups are allowed.")


class JsonlConnector(Connector):
    kind = "jsonl"
    Config = JsonlConfig
    description = 'A JSON Lines file of documents: {"text": str, "id": str, "metadata": {}} per line.'
    config: JsonlConfig

    def check(self) -> None:
        path = self.config.path.expanduser()
        self.allowances.check_path(path)
        if not path.is_file():
            raise InvalidInput(f"{path} is not a file; give the JSON Lines file to read with --path")

    def load(self) -> Iterator[Document | Unchanged | LoadFailure]:
        self.check()
        path = self.allowances.check_path(self.config.path)
        limit = self.settings.max_document_bytes
        seen: set[str] = set()
        try:
            lines = path.open("rb")
        except OSError as exc:  # unreadable: the source fails and none of its documents is deleted
            raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}; make it readable by kadapt") from None
        with lines:
            try:
                yield from self._records(lines, limit, seen)
            except OSError as exc:  # read part-way (a share gone mid-sync): the lines not read are kept
                yield ListingIncomplete(f"reading {path} failed part-way: {exc.strerror or exc}")

    def _records(self, lines, limit: int, seen: set[str]) -> Iterator[Document | Unchanged | LoadFailure]:
        """The file's records, line by line (an OSError while reading ends the listing there)."""
        for number, (raw, size) in enumerate(_bounded_lines(lines, limit), 1):
            if size > limit:
                item: Document | LoadFailure = _oversized(raw, number, size, limit)
            elif not raw.strip():
                continue
            else:
                item = self._line(raw, number)
            locator = item.locator if isinstance(item, LoadFailure) else item.metadata["locator"]
            if locator in seen:
                yield LoadFailure(f"{locator}#{number}", f"line {number}: id {locator!r} was already used")
                continue
            seen.add(locator)
            if isinstance(item, Document) and self.known_versions.get(locator) == item.metadata["version"]:
                yield Unchanged(locator)
            else:
                yield item

    def _line(self, raw: bytes, number: int) -> Document | LoadFailure:
        fallback = f"line-{number}"
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return LoadFailure(fallback, f"line {number}: not valid JSON ({exc})")
        if not isinstance(record, dict):
            return LoadFailure(fallback, f"line {number}: expected a JSON object")
        locator = str(record.get("id") or fallback)
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            return LoadFailure(locator, f"line {number}: 'text' must be a non-empty string")
        metadata = record.get("metadata") or {}
        if not isinstance(metadata, dict):
            return LoadFailure(locator, f"line {number}: 'metadata' must be an object")
        version = hashlib.sha256(raw.strip()).hexdigest()[:32]
        title = str(metadata.get("title") or locator)
        reserved = ("locator", "version", "title")
        extra = {key: value for key, value in metadata.items() if key not in reserved}
        return Document(page_content=text, metadata=extra | {"locator": locator, "version": version, "title": title})


def _bounded_lines(file: BinaryIO, limit: int) -> Iterator[tuple[bytes, int]]:
    """Each line (without its line break) and its size in bytes; of a line over ``limit`` bytes only the
    first ``limit`` + 1 are kept, the rest is read past in chunks."""
    while True:
        line = file.readline(limit + 2)
        if not line:
            return
        size = len(line.rstrip(b"\r\n"))
        if size > limit and not line.endswith(b"\n"):
            while True:
                rest = file.readline(_CHUNK)
                size += len(rest.rstrip(b"\r\n"))
                if not rest or rest.endswith(b"\n"):
                    break
        yield line[: limit + 1].rstrip(b"\r\n"), size


def _oversized(head: bytes, number: int, size: int, limit: int) -> LoadFailure:
    """The error of a line over the limit, under its id when the line starts with one."""
    locator = f"line-{number}"
    match = _LEADING_ID.match(head)
    if match:
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
            locator = str(json.loads(match.group(1))) or locator
    return LoadFailure(
        locator, f"line {number} is {size:,} bytes, over the limit of {limit:,} (KADAPT_MAX_DOCUMENT_BYTES)"
    )


@hookimpl
def register_connectors(register):
    register(JsonlConnector)

"""Document permissions: the groups a connector says may read a document (its ``readers``), and who may see it.

A connector may put ``readers`` (a list of group names) in a document's metadata; a document without it may be
read by everyone who may read its KB. Retrieval, search, citations, document pages and the whole-KB prompt only
use documents the caller may read: an admin reads every document; anyone else reads the unrestricted ones and
those whose readers share a group with theirs. An adapter has seen every document of its KB, so a caller who may
not read all of them is never answered by one: they get icl over what they may read (``kadapt.serving``).

Chunks in the vector store carry ``restricted`` and one ``reader:<group>`` flag per reader, so that the filter runs
in the store (chunks written before permissions existed carry neither and count as unrestricted).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from kadapt.errors import DocumentLoadError

__all__ = [
    "Audience",
    "hidden_filter",
    "may_read",
    "normalise_readers",
    "reader_filter",
    "reader_metadata",
    "stored_readers",
    "readers_marker",
]

Audience = frozenset[str] | None  # the caller's groups; None: sees every document (an admin, an evaluation)
_MAX_READERS = 256
_MAX_GROUP = 200


def normalise_readers(value: Any) -> list[str] | None:
    """A connector's ``readers`` as a sorted list of group names, None when it sets none; a malformed value is a
    document error (the document is not read rather than read by everyone)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise DocumentLoadError("its readers are not a list of group names")
    groups = sorted({str(group) for group in value})
    if len(groups) > _MAX_READERS or any(
        not group or len(group) > _MAX_GROUP or not group.isprintable() for group in groups
    ):
        raise DocumentLoadError(f"its readers are not up to {_MAX_READERS} printable group names")
    return groups


def readers_marker(readers: list[str] | None) -> str:
    """What a document's content hash adds for its readers, so that a change of readers re-indexes it ("" when it
    has none: the hashes of unrestricted documents stay what they were)."""
    return "" if readers is None else "\x00readers:" + "\x1f".join(readers)


def reader_metadata(readers: list[str] | None) -> dict[str, bool]:
    """The flags a chunk of a document with these readers carries in the vector store."""
    if readers is None:
        return {"restricted": False}
    return {"restricted": True} | {f"reader:{group}": True for group in readers}


def reader_filter(audience: Audience) -> dict | None:
    """The vector store's ``where`` for the chunks ``audience`` may read (None: every chunk)."""
    if audience is None:
        return None
    open_chunks = {"restricted": {"$ne": True}}
    allowed = [{f"reader:{group}": True} for group in sorted(audience)]
    return {"$or": [open_chunks, *allowed]} if allowed else open_chunks


def hidden_filter(audience: frozenset[str]) -> dict:
    """The vector store's ``where`` for the chunks ``audience`` may not read."""
    clauses = [{"restricted": True}, *({f"reader:{group}": {"$ne": True}} for group in sorted(audience))]
    return {"$and": clauses} if len(clauses) > 1 else clauses[0]


def stored_readers(meta: Any) -> list[str] | None:
    """The readers kept in a document's catalog metadata (``Document.meta``), None when it has none."""
    return meta.get("readers") if isinstance(meta, dict) else None


def may_read(readers: Collection[str] | None, audience: Audience) -> bool:
    return audience is None or readers is None or bool(set(readers) & audience)

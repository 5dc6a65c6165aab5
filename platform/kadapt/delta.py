"""What changed in a KB since an adapter's snapshot: the documents added, changed and removed since it was trained.

An adapter knows the documents of the snapshot it was trained on. Serving (:mod:`kadapt.serving`) puts the added
and changed ones in the prompt beside it and names the removed ones (delta ICL); a warm start
(:mod:`kadapt.adapters`) trains the adapter on to them. Snapshots keep each document's content hash, locator and
title, so a removed document can still be named after its text is gone.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select

from kadapt.catalog import Catalog, Document, Snapshot, SnapshotDocument
from kadapt.catalog.models import utc
from kadapt.costs import ChangeRate
from kadapt.settings import Settings

__all__ = ["Delta", "DeltaDocument", "adapter_delta", "change_rate", "snapshot_delta"]


@dataclass(frozen=True)
class DeltaDocument:
    document_id: str
    change: str  # added | changed | removed
    locator: str | None = None
    title: str | None = None


@dataclass
class Delta:
    """The difference between a base snapshot (an adapter's) and the KB's latest one."""

    base_snapshot: int | None
    base_hash: str | None
    current_snapshot: int | None
    current_hash: str | None
    documents: list[DeltaDocument] = field(default_factory=list)  # added and changed: to read from the prompt
    removed: list[DeltaDocument] = field(default_factory=list)
    base_documents: int = 0  # documents of the base snapshot
    characters: int = 0  # of the added and changed documents' texts

    @property
    def empty(self) -> bool:
        return not self.documents and not self.removed

    @property
    def document_ids(self) -> list[str]:
        return [document.document_id for document in self.documents]

    @property
    def share(self) -> float:
        """Documents added, changed or removed, as a share of the base snapshot's documents."""
        return (len(self.documents) + len(self.removed)) / max(1, self.base_documents)

    def stale(self, settings: Settings) -> bool:
        """Whether the delta has grown past ``KADAPT_DELTA_MAX_SHARE`` or ``KADAPT_DELTA_MAX_CHARS``: the adapter
        should be trained again rather than patched from the prompt."""
        return self.share > settings.delta_max_share or self.characters > settings.delta_max_chars

    def summary(self, settings: Settings | None = None) -> dict[str, Any]:
        """What a chat answer, the status and the report say of it."""
        data = {
            "adapter_snapshot": self.base_hash[:12] if self.base_hash else None,
            "current_snapshot": self.current_hash[:12] if self.current_hash else None,
            "added": sum(1 for document in self.documents if document.change == "added"),
            "changed": sum(1 for document in self.documents if document.change == "changed"),
            "removed": len(self.removed),
            "characters": self.characters,
            "share": round(self.share, 4),
        }
        if settings is not None:
            data["stale"] = self.stale(settings)
        return data

    def documents_json(self) -> list[dict[str, Any]]:
        return [asdict(document) for document in [*self.documents, *self.removed]]


def _members(session, snapshot_id: int) -> dict[str, SnapshotDocument]:
    return {
        row.document_id: row
        for row in session.scalars(select(SnapshotDocument).where(SnapshotDocument.snapshot_id == snapshot_id))
    }


_cache: OrderedDict[tuple[str, int, int | None, int | None], Delta] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 256


def snapshot_delta(catalog: Catalog, kb_id: int, base_snapshot_id: int | None) -> Delta:
    """What the KB's latest snapshot added, changed and removed against ``base_snapshot_id``. An unknown base (None:
    an adapter whose snapshot is gone) or a KB with no snapshot gives an empty delta.

    Snapshots never change once recorded, so a delta is computed once per (base, latest) pair and kept (every
    chat on a KB served from an adapter asks for it): a chat costs one query for the latest snapshot's id."""
    with catalog.session() as session:
        latest_id = session.scalar(select(func.max(Snapshot.id)).where(Snapshot.kb_id == kb_id))
    key = (str(catalog.engine.url), kb_id, base_snapshot_id, latest_id)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    delta = _compute(catalog, base_snapshot_id, latest_id)
    with _cache_lock:
        _cache[key] = delta
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return delta


def _compute(catalog: Catalog, base_snapshot_id: int | None, latest_id: int | None) -> Delta:
    with catalog.session() as session:
        latest = session.get(Snapshot, latest_id) if latest_id is not None else None
        base = session.get(Snapshot, base_snapshot_id) if base_snapshot_id is not None else None
        delta = Delta(
            base_snapshot=base.id if base else None,
            base_hash=base.hash if base else None,
            current_snapshot=latest.id if latest else None,
            current_hash=latest.hash if latest else None,
            base_documents=base.document_count if base else 0,
        )
        if base is None or latest is None or base.id == latest.id or base.hash == latest.hash:
            return delta
        before, after = _members(session, base.id), _members(session, latest.id)
        changed = [
            (document_id, row)
            for document_id, row in after.items()
            if document_id not in before or before[document_id].content_hash != row.content_hash
        ]
        # a snapshot keeps its documents' names; one recorded before it did is named from the documents
        names = _names(session, [document_id for document_id, row in changed if row.locator is None])
        for document_id, row in sorted(changed, key=lambda item: item[1].locator or item[0]):
            named = names.get(document_id)
            delta.documents.append(
                DeltaDocument(
                    document_id,
                    "changed" if document_id in before else "added",
                    row.locator or (named.locator if named else None),
                    row.title or (named.title if named else None),
                )
            )
        for document_id, row in sorted(before.items(), key=lambda item: item[1].locator or item[0]):
            if document_id not in after:
                delta.removed.append(DeltaDocument(document_id, "removed", row.locator, row.title))
        delta.characters = sum(
            int(
                session.scalar(
                    select(func.coalesce(func.sum(func.length(Document.text)), 0)).where(Document.id.in_(chunk))
                )
                or 0
            )
            for chunk in _chunks(delta.document_ids)
        )
        return delta


def _chunks(ids: list[str], size: int = 500):
    """``ids`` in slices small enough for one IN (...) on any database (SQLite allows 32,766 variables)."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _names(session, ids: list[str]) -> dict[str, Any]:
    found = {}
    for chunk in _chunks(ids):
        for row in session.execute(select(Document.id, Document.locator, Document.title).where(Document.id.in_(chunk))):
            found[row.id] = row
    return found


def adapter_delta(catalog: Catalog, adapter) -> Delta:
    """What changed in the adapter's KB since the snapshot it was trained on; for a warm-started adapter, the
    documents removed since its last full training's snapshot count as removed too (a warm start trains on what
    changed, so what its ancestors learned of a removed document is still in its weights)."""
    from dataclasses import replace

    from kadapt.catalog import Adapter

    delta = snapshot_delta(catalog, adapter.kb_id, adapter.snapshot_id)
    if not getattr(adapter, "parent_id", None):
        return delta
    with catalog.session() as session:
        root = adapter
        for _ in range(64):  # a chain of warm starts ends at a full training (KADAPT_WARM_START_MAX)
            parent = session.get(Adapter, root.parent_id) if root.parent_id else None
            if parent is None:
                break
            root = parent
    if root is adapter or root.snapshot_id is None:
        return delta
    known = {item.document_id for item in delta.removed}
    current = set(delta.document_ids)
    earlier = [
        item
        for item in snapshot_delta(catalog, adapter.kb_id, root.snapshot_id).removed
        if item.document_id not in known and item.document_id not in current
    ]
    return replace(delta, removed=[*delta.removed, *earlier]) if earlier else delta


def change_rate(catalog: Catalog, kb_id: int, *, window_days: float = 30.0, now=None) -> ChangeRate | None:
    """How fast the KB's documents change: the documents added, changed or removed between its snapshots of the
    last ``window_days`` (the last 50 at most, from the one before the window), per day since the first of them;
    characters per day from the KB's mean document length. None for a KB without a snapshot."""
    from datetime import timedelta

    from kadapt.catalog import utcnow

    now = now or utcnow()
    with catalog.session() as session:
        recent = list(
            session.scalars(select(Snapshot).where(Snapshot.kb_id == kb_id).order_by(Snapshot.id.desc()).limit(51))
        )
        if not recent:
            return None
        cutoff = now - timedelta(days=window_days)
        chosen = [row for row in recent if utc(row.created_at) >= cutoff]
        chosen = recent[: len(chosen) + 1]  # and the one before the window: what its first change changed
        chosen.reverse()
        changed = touched = 0
        previous = _members(session, chosen[0].id)
        for snapshot in chosen[1:]:
            members = _members(session, snapshot.id)
            added_or_changed = sum(
                1
                for key, row in members.items()
                if key not in previous or previous[key].content_hash != row.content_hash
            )
            changed += added_or_changed
            touched += added_or_changed + sum(1 for key in previous if key not in members)
            previous = members
        latest = chosen[-1]
        # the changes counted all happened within the window (each is a snapshot recorded in it), however old the
        # snapshot before it is
        since = max(utc(chosen[0].created_at), cutoff)
        days = max(1.0, (now - since).total_seconds() / 86400)
        characters = int(latest.text_chars or 0)
        mean = characters / max(1, latest.document_count)
        return ChangeRate(
            documents_per_day=touched / days,
            characters_per_day=changed * mean / days,
            days=round(days, 2),
            snapshots=len(chosen),
            documents=latest.document_count,
            characters=characters,
        )

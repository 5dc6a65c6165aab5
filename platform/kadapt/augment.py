"""Running augmenters over a KB: resumable, deduplicated, every output traceable to its documents.

An augmenter (``register_augmenters``) gets batches of documents and yields :class:`Draft` texts naming
the documents they came from. The platform skips documents already processed at the same dependency
hash (so an interrupted run resumes where it stopped), drops duplicates, and stores each output with the
content hashes of its sources; an augmentation is used for training only while those documents are
unchanged in the snapshot being trained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass, field
from typing import Any, ClassVar, Protocol

from sqlalchemy import select

from kadapt.catalog import Augmentation, AugmentationUnit, Catalog, Document, KnowledgeBase, SnapshotDocument
from kadapt.errors import InvalidInput
from kadapt.jobs import JobContext
from kadapt.kbs import get_kb, latest_snapshot
from kadapt.settings import Settings, get_settings

__all__ = [
    "AugmentContext",
    "Augmenter",
    "Draft",
    "SourceDocument",
    "augment_kb",
    "registered_augmenters",
    "normalize",
    "valid_augmentations",
]


@dataclass(frozen=True)
class SourceDocument:
    id: str
    title: str
    locator: str
    text: str
    content_hash: str


@dataclass
class Draft:
    text: str
    kind: str
    source_ids: tuple[str, ...]
    prompt_tokens: int = 0
    generated_tokens: int = 0


@dataclass
class AugmentContext:
    """What a run's augmenters share: the KB, all its documents, the settings, the generator (loaded on first
    use) and ``stats``, scratch space for the run (parsed statements, derived conclusions); what an augmenter
    puts under ``stats["summary"][<its name>]`` (counts, e.g. ``capped``) joins its counts in the run's summary."""

    kb: KnowledgeBase
    documents: list[SourceDocument]
    settings: Settings
    model_spec: str
    _model: Any = None
    store: Any = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self):
        """The generator model, loaded on first use (rule-based augmenters never load it)."""
        if self._model is None:
            from kadapt.models import get_model_pool

            self._model = get_model_pool().get(self.model_spec)
        return self._model

    def kb_hash(self) -> str:
        joined = ",".join(f"{doc.id}:{doc.content_hash}" for doc in self.documents)
        return hashlib.sha256(joined.encode()).hexdigest()


class Augmenter(Protocol):
    name: ClassVar[str]
    scope: ClassVar[str]  # "local" or "global"
    description: ClassVar[str]
    batch_documents: ClassVar[int]

    def dependency(self, document: SourceDocument, context: AugmentContext) -> str:
        """What a document's outputs depend on (its content hash; for global augmenters, the whole KB)."""

    def augment(self, documents: Sequence[SourceDocument], context: AugmentContext) -> Iterator[Draft]:
        """Yield drafts for ``documents``; each names its source document ids."""


def normalize(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


def _text_hash(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()


def kb_documents(catalog: Catalog, kb_id: int) -> list[SourceDocument]:
    with catalog.session() as session:
        rows = session.execute(
            select(Document.id, Document.title, Document.locator, Document.text, Document.content_hash)
            .where(Document.kb_id == kb_id)
            .order_by(Document.locator)
        )
        return [SourceDocument(*row) for row in rows]


def registered_augmenters(names, plugins=None, *, where: str = "") -> dict[str, Any]:
    """The installed augmenters by name; InvalidInput naming any of ``names`` that is not one (``where``: the
    setting they came from, for the message)."""
    from kadapt.plugins import check_names, get_plugins

    registered = (plugins or get_plugins()).contributions("register_augmenters")
    check_names(registered, names, "augmenter", where=where)
    return registered


def augment_kb(
    catalog: Catalog,
    slug: str,
    *,
    names: Sequence[str] | None = None,
    document_ids: Sequence[str] | None = None,
    context: JobContext | None = None,
    settings: Settings | None = None,
    plugins=None,
) -> dict[str, Any]:
    """Run the named augmenters (all when None) over the KB's current documents (or those of
    ``document_ids``: a pilot augments only its sample); returns counts. The whole KB is augmented only
    within aug-ft's size limit (``KADAPT_MAX_KB_TOKENS_AUG_FT``)."""
    from kadapt.kb_limits import check_mode

    settings = settings or get_settings()
    registered = registered_augmenters(names or (), plugins)
    names = list(names or registered)
    kb = get_kb(catalog, slug)
    snapshot = latest_snapshot(catalog, kb.id)
    if document_ids is None:
        check_mode(catalog, kb, "aug-ft", settings)
    documents = kb_documents(catalog, kb.id)
    if not documents:
        raise InvalidInput(f"KB {slug!r} has no documents; run `kadapt sync {slug}` first")
    augment_context = AugmentContext(
        kb=kb, documents=documents, settings=settings, model_spec=kb.generator_model or kb.base_model
    )
    chosen = set(document_ids) if document_ids is not None else None
    plan = _plan(catalog, kb, [registered[name] for name in names], documents, chosen, augment_context)
    total = sum(len(pending) for _, pending in plan)
    summary: dict[str, Any] = {
        "documents": len(documents),
        "processed": 0,
        "skipped": (len(chosen) if chosen is not None else len(documents)) * len(names) - total,
        "by_augmenter": {},
    }
    if context:
        context.progress(done=0, total=total, message="augmenting")
    for augmenter, pending in plan:
        counts = summary["by_augmenter"].setdefault(
            augmenter.name,
            {"added": 0, "duplicates": 0, "prompt_tokens": 0, "generated_tokens": 0, "documents": len(pending)},
        )
        step = max(1, augmenter.batch_documents)
        for start in range(0, len(pending), step):
            batch = pending[start : start + step]
            drafts = list(augmenter.augment(batch, augment_context))
            _store(catalog, kb, snapshot.id if snapshot else None, augmenter, augment_context, batch, drafts, counts)
            summary["processed"] += len(batch)
            if context:
                context.progress(
                    done=summary["processed"],
                    message=f"{augmenter.name}: {counts['added']} added, {counts['duplicates']} duplicates",
                )
        counts |= augment_context.stats.get("summary", {}).get(augmenter.name, {})
    return summary


def _plan(catalog, kb, augmenters, documents, chosen, augment_context) -> list[tuple[Any, list[SourceDocument]]]:
    """Per augmenter, the documents (of ``chosen``, when given) it has not augmented at their current dependency:
    an interrupted run resumes where it stopped, a changed document is augmented again."""
    with catalog.session() as session:
        done = {
            (unit.augmenter, unit.document_id): unit.dependency_hash
            for unit in session.scalars(select(AugmentationUnit).where(AugmentationUnit.kb_id == kb.id))
        }
    return [
        (
            augmenter,
            [
                doc
                for doc in documents
                if (chosen is None or doc.id in chosen)
                and done.get((augmenter.name, doc.id)) != augmenter.dependency(doc, augment_context)
            ],
        )
        for augmenter in augmenters
    ]


@dataclass
class _UnitCounts:
    """What one document's augmentation wrote and spent in a run (its AugmentationUnit row)."""

    outputs: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0


def _store(
    catalog: Catalog,
    kb: KnowledgeBase,
    snapshot_id: int | None,
    augmenter,
    context: AugmentContext,
    batch: Sequence[SourceDocument],
    drafts: list[Draft],
    counts: dict[str, int],
) -> None:
    hashes = {doc.id: doc.content_hash for doc in context.documents}
    generator = getattr(context._model, "model_id", None) if context._model is not None else None
    with catalog.session() as session:
        existing = set(
            session.scalars(
                select(Augmentation.text_hash).where(
                    Augmentation.kb_id == kb.id, Augmentation.augmenter == augmenter.name
                )
            )
        )
        per_document = {doc.id: _UnitCounts() for doc in batch}
        for draft in drafts:
            text = draft.text.strip()
            digest = _text_hash(text)
            counts["prompt_tokens"] += draft.prompt_tokens
            counts["generated_tokens"] += draft.generated_tokens
            owner = per_document.get(draft.source_ids[0]) if draft.source_ids else None
            if owner is not None:
                owner.prompt_tokens += draft.prompt_tokens
                owner.generated_tokens += draft.generated_tokens
            if not text or digest in existing:
                counts["duplicates"] += 1
                continue
            existing.add(digest)
            session.add(
                Augmentation(
                    kb_id=kb.id,
                    snapshot_id=snapshot_id,
                    augmenter=augmenter.name,
                    scope=augmenter.scope,
                    kind=draft.kind,
                    source_hashes={doc_id: hashes[doc_id] for doc_id in draft.source_ids},
                    text=text,
                    text_hash=digest,
                    generator_model=generator if draft.generated_tokens else None,
                    prompt_tokens=draft.prompt_tokens,
                    generated_tokens=draft.generated_tokens,
                )
            )
            counts["added"] += 1
            if owner is not None:
                owner.outputs += 1
        for doc in batch:
            done = per_document[doc.id]
            unit = session.get(AugmentationUnit, (kb.id, augmenter.name, doc.id))
            if unit is None:
                unit = AugmentationUnit(kb_id=kb.id, augmenter=augmenter.name, document_id=doc.id)
                session.add(unit)
            unit.dependency_hash = augmenter.dependency(doc, context)
            unit.outputs, unit.prompt_tokens, unit.generated_tokens = astuple(done)


def valid_augmentations(catalog: Catalog, kb_id: int, snapshot_id: int) -> list[Augmentation]:
    """Augmentations whose every source document is in the snapshot with the same content."""
    with catalog.session() as session:
        members = dict(
            session.execute(
                select(SnapshotDocument.document_id, SnapshotDocument.content_hash).where(
                    SnapshotDocument.snapshot_id == snapshot_id
                )
            ).all()
        )
        rows = list(session.scalars(select(Augmentation).where(Augmentation.kb_id == kb_id).order_by(Augmentation.id)))
    return [
        row
        for row in rows
        if row.source_hashes and all(members.get(doc_id) == digest for doc_id, digest in row.source_hashes.items())
    ]

"""Incremental ingestion: connectors -> documents -> chunks -> Chroma, with the catalog as the ledger.

- A document whose content hash is unchanged costs nothing (and when its connector can tell from a cheap
  version marker, it is not even read).
- A changed document's chunks are replaced; a document no longer listed leaves catalog and collection,
  unless its connector reported the listing incomplete (``ListingIncomplete``: a start page, robots.txt or
  folder that failed): then no document of that source leaves, and the reason is the source's error.
- A document that fails to load is recorded in ``document_errors`` and skipped; if it was loaded before,
  its last good version stays.
- Chunks are written to Chroma before the catalog row that accounts for them is committed, so a crash
  at any point leaves a state the next sync repairs (chunk ids are deterministic; writes are upserts).
  A sync marks its source as in progress; the sync after one that did not finish also removes the
  source's chunks whose document the catalog does not hold and the source no longer lists (written
  just before the crash, for a document that has since left the source).
- A new Snapshot is recorded only when the KB's set of (document id, content hash) pairs changed.
- A KB holds at most ``KADAPT_MAX_KB_DOCUMENTS`` documents: a new document beyond it is recorded as that
  document's error, not added; documents already held go on syncing.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from langchain_core.documents import Document as LCDocument
from sqlalchemy import delete, func, select

from kadapt.allowances import source_allowances
from kadapt.catalog import Catalog, Document, DocumentError, KnowledgeBase, Snapshot, SnapshotDocument, Source, utcnow
from kadapt.connectors import (
    ConnectorContext,
    ListingIncomplete,
    LoadFailure,
    Unchanged,
    get_connector_class,
    validate_config,
)
from kadapt.errors import DocumentLoadError, KadaptError
from kadapt.jobs import JobCancelled, JobContext
from kadapt.kb_limits import document_chars
from kadapt.kbs import get_kb, kb_busy_lock, source_work_dir
from kadapt.readers import normalise_readers, reader_metadata, readers_marker
from kadapt.settings import Settings, get_settings
from kadapt.store import VectorStore, get_store

__all__ = ["SourceSync", "SyncStats", "document_id", "record_snapshot", "split_text", "sync_sources"]

_FLUSH_CHUNKS = 256
SYNC_IN_PROGRESS = "kadapt:sync_in_progress"  # key in a source's state while a sync of it runs


@dataclass
class SyncStats:
    listed: int = 0  # items the connectors reported
    skipped_unread: int = 0  # unchanged by version marker: not read at all
    unchanged: int = 0  # read, same content hash: not embedded
    added: int = 0
    updated: int = 0
    deleted: int = 0
    failed: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    snapshot_created: bool = False
    snapshot: str | None = None
    source_errors: list[str] = field(default_factory=list)


def document_id(source_id: int, locator: str) -> str:
    return hashlib.sha256(f"{source_id}\x00{locator}".encode()).hexdigest()[:32]


def _bad_readers(item: LCDocument) -> str | None:
    """Why a document's readers (its permissions, from the connector) cannot be taken, or None."""
    try:
        normalise_readers(item.metadata.get("readers"))
    except DocumentLoadError as exc:
        return exc.message
    return None


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def split_text(text: str, locator: str, settings: Settings) -> list[str]:
    from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

    kwargs = {"chunk_size": settings.chunk_size, "chunk_overlap": min(settings.chunk_overlap, settings.chunk_size // 2)}
    if locator.lower().endswith((".md", ".markdown")):
        splitter = RecursiveCharacterTextSplitter.from_language(Language.MARKDOWN, **kwargs)
    else:
        splitter = RecursiveCharacterTextSplitter(**kwargs)
    return [chunk for chunk in splitter.split_text(text) if chunk.strip()] or [text]


def _text_too_large(text: str, limit: int) -> str | None:
    """Why a document's text is over ``KADAPT_MAX_DOCUMENT_BYTES``, whichever connector read it."""
    if len(text) * 4 <= limit:  # UTF-8 spends at most 4 bytes on a character
        return None
    size = len(text.encode())
    if size <= limit:
        return None
    return f"text is {size:,} bytes, over the limit of {limit:,} (KADAPT_MAX_DOCUMENT_BYTES)"


class _Batch:
    """Chunks waiting to be written, with the catalog rows to commit once they are in Chroma."""

    def __init__(self) -> None:
        self.replace_ids: list[str] = []
        self.chunk_ids: list[str] = []
        self.texts: list[str] = []
        self.metadatas: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []


@dataclass
class _Listing:
    """What a source's listing reported so far."""

    held: int  # documents the KB holds, counting this source's known ones and the new ones taken so far
    seen: set[str] = field(default_factory=set)  # locators listed
    errors: dict[str, str] = field(default_factory=dict)  # locator -> why it was not taken
    incomplete: list[str] = field(default_factory=list)  # why the listing misses items: then no unlisted one leaves


class SourceSync:
    def __init__(
        self,
        catalog: Catalog,
        store: VectorStore,
        settings: Settings,
        kb: KnowledgeBase,
        source: Source,
        stats: SyncStats,
        context: JobContext | None,
        lock_lost: threading.Event | None = None,
    ) -> None:
        self.catalog, self.store, self.settings = catalog, store, settings
        self.kb, self.source, self.stats, self.job = kb, source, stats, context
        self.lock_lost = lock_lost
        self.batch = _Batch()

    def run(self, plugins=None) -> None:
        connector_class = get_connector_class(self.source.kind, plugins)
        config = validate_config(connector_class, self.source.config)
        state = dict(self.source.state or {})
        unfinished = bool(state.pop(SYNC_IN_PROGRESS, False))  # the last sync of this source died part-way
        self._mark_in_progress(state)
        known = self._known_documents()
        context = self._connector_context(known, state)
        connector = connector_class(config, context)
        listing = _Listing(held=self._documents_held(known))
        for item in connector.load():
            self._take(item, listing, known)
        self._flush()
        self._remove_unlisted(known, listing, unfinished)
        if unfinished and listing.incomplete:  # orphans are told apart only by a complete listing: the next one
            context.state[SYNC_IN_PROGRESS] = True
        self._record_errors_and_state(listing.errors, context.state)

    def _mark_in_progress(self, state: dict[str, Any]) -> None:
        """Mark the source's sync as in progress, committed before any chunk is written."""
        with self.catalog.session() as session:
            source = session.get(Source, self.source.id)
            if source is not None:
                source.state = {**state, SYNC_IN_PROGRESS: True}

    def _known_documents(self) -> dict[str, Any]:
        """The source's documents in the catalog (id, content hash, version), by locator."""
        with self.catalog.session() as session:
            return {
                row.locator: row
                for row in session.execute(
                    select(Document.locator, Document.id, Document.content_hash, Document.version).where(
                        Document.source_id == self.source.id
                    )
                )
            }

    def _connector_context(self, known: dict[str, Any], state: dict[str, Any]) -> ConnectorContext:
        return ConnectorContext(
            settings=self.settings,
            source_id=self.source.id,
            work_dir=source_work_dir(self.settings, self.source.id),
            known_versions={locator: row.version for locator, row in known.items()},
            state=state,
            # the allowances the KB's owner groups have now: a source whose groups lost one fails, unread
            allowances=source_allowances(self.settings, self.kb.owner_groups),
        )

    def _documents_held(self, known: dict[str, Any]) -> int:
        """Documents the KB holds, counting this source's known ones as kept (those no longer listed leave at the
        end, so their room goes to new documents at the next sync)."""
        with self.catalog.session() as session:
            return len(known) + session.scalar(
                select(func.count())
                .select_from(Document)
                .where(Document.kb_id == self.kb.id, Document.source_id != self.source.id)
            )

    def _take(
        self, item: LCDocument | Unchanged | LoadFailure | ListingIncomplete, listing: _Listing, known: dict[str, Any]
    ) -> None:
        """Account for one item the connector reported."""
        if isinstance(item, ListingIncomplete):
            listing.incomplete.append(item.reason)
            if self.job:
                self.job.log(f"listing incomplete: {item.reason}")
            return
        self.stats.listed += 1
        if isinstance(item, Unchanged):
            listing.seen.add(item.locator)
            self.stats.skipped_unread += 1
        elif isinstance(item, LoadFailure):
            listing.seen.add(item.locator)
            self._fail(listing, item.locator, item.message)
        else:
            self._take_loaded(item, listing, known)
        if self.job:
            self.job.progress(done=self.stats.listed, message=f"{self.source.kind} source {self.source.id}")

    def _take_loaded(self, item: LCDocument, listing: _Listing, known: dict[str, Any]) -> None:
        """Queue a loaded document, or record why it is not taken (too large, or the KB is full)."""
        locator = str(item.metadata["locator"])
        listing.seen.add(locator)
        existing = known.get(locator)
        problem = _text_too_large(item.page_content, self.settings.max_document_bytes) or _bad_readers(item)
        if problem is None and existing is None and listing.held >= self.settings.max_kb_documents:
            problem = self._over_limit(listing.held)
        if problem:
            self._fail(listing, locator, problem)
        else:
            listing.held += existing is None
            self._document(item, locator, existing)

    def _fail(self, listing: _Listing, locator: str, message: str) -> None:
        listing.errors[locator] = message
        self.stats.failed += 1
        if self.job:
            self.job.log(f"error: {locator}: {message}")

    def _remove_unlisted(self, known: dict[str, Any], listing: _Listing, unfinished: bool) -> None:
        """Delete the known documents the listing no longer reports (none if it is incomplete), and after an
        unfinished sync, the orphaned chunks."""
        missing = {locator: row.id for locator, row in known.items() if locator not in listing.seen}
        if listing.incomplete:
            self._keep_missing(missing, listing.incomplete)
        else:
            self._delete_missing(missing)
            if unfinished:
                self._delete_orphans(keep={document_id(self.source.id, locator) for locator in listing.seen})

    def _record_errors_and_state(self, errors: dict[str, str], state: dict[str, Any]) -> None:
        """Replace the source's document errors, and save its state and the time of this sync."""
        with self.catalog.session() as session:
            session.execute(delete(DocumentError).where(DocumentError.source_id == self.source.id))
            for locator, message in errors.items():
                session.add(DocumentError(kb_id=self.kb.id, source_id=self.source.id, locator=locator, message=message))
            source = session.get(Source, self.source.id)
            if source is not None:
                source.state = state
                source.last_sync_at = utcnow()

    def _over_limit(self, held: int) -> str:
        limit = self.settings.max_kb_documents
        return (
            f"not added: KB {self.kb.slug!r} holds {held:,} documents, the most KADAPT_MAX_KB_DOCUMENTS={limit:,} "
            "allows; raise the setting or remove documents"
        )

    def _document(self, item: LCDocument, locator: str, existing) -> None:
        readers = normalise_readers(item.metadata.get("readers"))
        digest = content_hash(item.page_content + readers_marker(readers))
        version = item.metadata.get("version")
        if existing is not None and existing.content_hash == digest:
            self.stats.unchanged += 1
            if existing.version != version:
                with self.catalog.session() as session:
                    row = session.get(Document, existing.id)
                    if row is not None:
                        row.version = version
                        row.last_seen = utcnow()
            return
        doc_id = existing.id if existing is not None else document_id(self.source.id, locator)
        title = str(item.metadata.get("title") or locator)
        chunks = split_text(item.page_content, locator, self.settings)
        batch = self.batch
        if existing is not None:
            batch.replace_ids.append(doc_id)
        for index, chunk in enumerate(chunks):
            batch.chunk_ids.append(f"{doc_id}-{index}")
            batch.texts.append(chunk)
            batch.metadatas.append(
                {
                    "document_id": doc_id,
                    "source_id": self.source.id,
                    "locator": locator,
                    "title": title,
                    "chunk_index": index,
                    "content_hash": digest,
                }
                | reader_metadata(readers)
            )
        metadata = {key: value for key, value in item.metadata.items() if key not in ("locator", "version", "title")}
        if readers is not None:
            metadata["readers"] = readers
        batch.rows.append(
            {
                "id": doc_id,
                "locator": locator,
                "title": title,
                "content_hash": digest,
                "version": version,
                "text": item.page_content,
                "meta": metadata,
                "chunk_count": len(chunks),
                "new": existing is None,
            }
        )
        if len(batch.chunk_ids) >= _FLUSH_CHUNKS:
            self._flush()

    def _flush(self) -> None:
        batch = self.batch
        if not batch.rows:
            return
        self.check_alive()
        collection = self.store.collection(self.kb)
        if batch.replace_ids:
            before = len(collection.get(where={"document_id": {"$in": batch.replace_ids}}, include=[])["ids"])
            collection.delete(where={"document_id": {"$in": batch.replace_ids}})
            self.stats.chunks_deleted += before
        self.store.add_chunks(self.kb, batch.chunk_ids, batch.texts, batch.metadatas)
        self.stats.chunks_embedded += len(batch.chunk_ids)
        now = utcnow()
        with self.catalog.session() as session:
            for row in batch.rows:
                document = session.get(Document, row["id"])
                if document is None:
                    document = Document(id=row["id"], kb_id=self.kb.id, source_id=self.source.id, first_seen=now)
                    session.add(document)
                for key in ("locator", "title", "content_hash", "version", "text", "meta", "chunk_count"):
                    setattr(document, key, row[key])
                document.last_seen = now
                document.updated_at = now
                if row["new"]:
                    self.stats.added += 1
                else:
                    self.stats.updated += 1
        self.batch = _Batch()

    def check_alive(self) -> None:
        """Stop before writing chunks for a KB or source that is gone, for a job that was cancelled, or once the
        KB's lock was lost (another sync or a deletion may hold it now)."""
        if self.lock_lost is not None and self.lock_lost.is_set():
            raise JobCancelled(f"the sync of KB {self.kb.slug!r} lost the KB's lock (the catalog was unreachable)")
        if self.job:
            self.job.flush()  # raises JobCancelled when the job was cancelled, or deleted with its KB
        with self.catalog.session() as session:
            if session.get(KnowledgeBase, self.kb.id) is None or session.get(Source, self.source.id) is None:
                raise JobCancelled(f"KB {self.kb.slug!r} or its source {self.source.id} was removed during the sync")

    def _delete_orphans(self, keep: set[str]) -> None:
        """Remove this source's chunks whose document the catalog does not hold, unless listed now (``keep``)."""
        collection = self.store.collection(self.kb)
        found = collection.get(where={"source_id": self.source.id}, include=["metadatas"])
        with self.catalog.session() as session:
            held = set(session.scalars(select(Document.id).where(Document.source_id == self.source.id)))
        orphans = {meta["document_id"] for meta in found["metadatas"] or []} - held - keep
        if not orphans:
            return
        chunk_ids = [
            chunk_id
            for chunk_id, meta in zip(found["ids"], found["metadatas"], strict=True)
            if meta["document_id"] in orphans
        ]
        collection.delete(ids=chunk_ids)
        self.stats.chunks_deleted += len(chunk_ids)
        if self.job:
            self.job.log(f"removed {len(chunk_ids)} chunks of {len(orphans)} documents an interrupted sync left")

    def _keep_missing(self, missing: dict[str, str], reasons: list[str]) -> None:
        """Keep the documents an incomplete listing did not report, and make the reason the source's error."""
        shown = "; ".join(reasons[:3])
        if len(reasons) > 3:
            shown += f"; and {len(reasons) - 3} more (see the job log)"
        message = (
            f"source {self.source.id} ({self.source.kind}): listing incomplete, so no document was deleted "
            f"({len(missing):,} not listed kept): {shown}"
        )
        self.stats.source_errors.append(message)
        if self.job:
            self.job.log(f"error: {message}")

    def _delete_missing(self, missing: dict[str, str]) -> None:
        if not missing:
            return
        ids = list(missing.values())
        collection = self.store.collection(self.kb)
        self.stats.chunks_deleted += len(collection.get(where={"document_id": {"$in": ids}}, include=[])["ids"])
        collection.delete(where={"document_id": {"$in": ids}})
        with self.catalog.session() as session:
            session.execute(delete(Document).where(Document.id.in_(ids)))
        self.stats.deleted += len(ids)
        if self.job:
            for locator in sorted(missing):
                self.job.log(f"removed: {locator}")


def record_snapshot(catalog: Catalog, kb_id: int, job_id: str | None = None) -> tuple[Snapshot | None, bool]:
    """Record a snapshot if the KB's (document id, content hash) pairs changed; return (latest, created)."""
    with catalog.session() as session:
        rows = sorted(
            session.execute(
                select(Document.id, Document.content_hash, Document.locator, Document.title).where(
                    Document.kb_id == kb_id
                )
            )
        )
        pairs = [(row.id, row.content_hash) for row in rows]
        digest = hashlib.sha256("\n".join(f"{doc_id}:{chash}" for doc_id, chash in pairs).encode()).hexdigest()
        latest = session.scalar(select(Snapshot).where(Snapshot.kb_id == kb_id).order_by(Snapshot.id.desc()).limit(1))
        if latest is not None and latest.hash == digest:
            if latest.text_chars is None:  # recorded before the totals were kept
                latest.text_chars = document_chars(session, kb_id)[1]
            return latest, False
        if latest is None and not pairs:
            return None, False
        snapshot = Snapshot(
            kb_id=kb_id,
            hash=digest,
            document_count=len(pairs),
            job_id=job_id,
            text_chars=document_chars(session, kb_id)[1],  # chat tells from it whether the KB fits a prompt
        )
        session.add(snapshot)
        session.flush()
        session.add_all(
            SnapshotDocument(
                snapshot_id=snapshot.id,
                document_id=row.id,
                content_hash=row.content_hash,
                locator=row.locator,
                title=row.title,
            )
            for row in rows
        )
        return snapshot, True


def sync_sources(
    catalog: Catalog,
    slug: str,
    *,
    context: JobContext | None = None,
    settings: Settings | None = None,
    store: VectorStore | None = None,
    plugins=None,
) -> SyncStats:
    """Sync every source of a KB and record a snapshot when its documents changed (what follows a new snapshot,
    a re-decision, is :func:`kadapt.sync.sync_kb`'s). A source that fails as a whole is reported; the others
    still sync.

    One sync of a KB at a time: it holds the KB's lock (named after its job and attempt) while it runs, and a
    second one is refused at once with :class:`~kadapt.errors.KBBusy` naming the job that runs. A resumed
    job's attempt waits for an earlier attempt of the same job to stand down (it learns it was superseded
    within a third of ``KADAPT_JOB_STALE_SECONDS`` and stops before its next write) or for a dead one's lease
    to run out, up to ``KADAPT_JOB_STALE_SECONDS`` + ``KADAPT_LOCK_LEASE_SECONDS``: two attempts of one sync
    never run together."""
    settings = settings or get_settings()
    store = store or get_store(settings)
    kb = get_kb(catalog, slug)
    stats = SyncStats()
    owner = context.attempt_name if context else uuid.uuid4().hex
    wait = 0.0
    if context and _held_by_job(catalog, kb, context.job_id):
        wait = settings.job_stale_seconds + settings.lock_lease_seconds
    with kb_busy_lock(catalog, kb, owner, settings, wait_seconds=wait) as lock_lost:
        with catalog.session() as session:
            sources = list(session.scalars(select(Source).where(Source.kb_id == kb.id).order_by(Source.id)))
        for source in sources:
            try:
                SourceSync(catalog, store, settings, kb, source, stats, context, lock_lost).run(plugins)
            except KadaptError as exc:
                message = f"source {source.id} ({source.kind}): {exc.message}"
                stats.source_errors.append(message)
                if context:
                    context.log(f"error: {message}")
        # under the lock: a deletion waiting for it never races the snapshot's rows
        snapshot, created = record_snapshot(catalog, kb.id, context.job_id if context else None)
    stats.snapshot_created = created
    stats.snapshot = snapshot.hash[:12] if snapshot else None
    return stats


def _held_by_job(catalog: Catalog, kb: KnowledgeBase, job_id: str) -> bool:
    """Whether an attempt of job ``job_id`` holds the KB's lock (held as ``<job id>:<attempt>``)."""
    from kadapt.locks import holder, kb_lock

    return (holder(catalog, kb_lock(kb.id)) or "").split(":")[0] == job_id

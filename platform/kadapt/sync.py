"""Keeping a KB in step with its sources: a sync or a source's removal, then what follows a new snapshot.

Every change to a KB's documents ends in :func:`after_snapshot`: when the change recorded a new snapshot, a KB
that was decided before gets a new decision (the policy weighs the last measurement against the snapshot; the
rationale says the estimates are older, and ``kadapt adapt`` measures again). Ingestion
(:mod:`kadapt.ingest`) and the KB registry (:mod:`kadapt.kbs`) know nothing of decisions: the calls that change
documents go through here.
"""

from __future__ import annotations

from kadapt.catalog import Catalog, KnowledgeBase, Snapshot, Source
from kadapt.ingest import SyncStats, record_snapshot, sync_sources
from kadapt.jobs import JobContext
from kadapt.kbs import delete_source, get_kb, latest_snapshot
from kadapt.settings import Settings
from kadapt.store import VectorStore

__all__ = ["after_snapshot", "remove_source", "sync_kb"]


def after_snapshot(
    catalog: Catalog, slug: str, snapshot: Snapshot, context: JobContext | None = None, cause: str = "a sync"
) -> None:
    """What follows a new snapshot of KB ``slug`` (recorded by ``cause``): its re-decision, when it was decided
    before."""
    from kadapt.policy import redecide_after_change

    redecide_after_change(catalog, slug, snapshot, context, cause=cause)


def sync_kb(
    catalog: Catalog,
    slug: str,
    *,
    context: JobContext | None = None,
    settings: Settings | None = None,
    store: VectorStore | None = None,
    plugins=None,
) -> SyncStats:
    """Sync every source of a KB (:func:`kadapt.ingest.sync_sources`), then :func:`after_snapshot` when the
    sync recorded a new snapshot."""
    stats = sync_sources(catalog, slug, context=context, settings=settings, store=store, plugins=plugins)
    if stats.snapshot_created:
        kb = get_kb(catalog, slug)
        after_snapshot(catalog, slug, latest_snapshot(catalog, kb.id), context)
    return stats


def remove_source(catalog: Catalog, store, source_id: int, settings: Settings | None = None) -> Source:
    """Remove a source with its documents and their chunks (:func:`kadapt.kbs.delete_source`), record the KB's
    new snapshot and :func:`after_snapshot`."""
    source = delete_source(catalog, store, source_id, settings)
    snapshot, created = record_snapshot(catalog, source.kb_id)
    if created and snapshot is not None:
        with catalog.session() as session:
            slug = session.get(KnowledgeBase, source.kb_id).slug
        after_snapshot(catalog, slug, snapshot, cause=f"the removal of source {source_id}")
    return source

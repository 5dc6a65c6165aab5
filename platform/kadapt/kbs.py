"""Knowledge bases and their sources: the operations the CLI and the API share."""

from __future__ import annotations

import re
import shutil
from typing import Any

from sqlalchemy import delete, func, select

from kadapt.catalog import Catalog, Document, DocumentError, Job, KnowledgeBase, Snapshot, Source
from kadapt.connectors import ConnectorContext, get_connector_class, validate_config
from kadapt.errors import AlreadyExists, InvalidInput, NotFound
from kadapt.settings import Settings

__all__ = [
    "SLUG_PATTERN",
    "kb_dict",
    "source_dict",
    "add_source",
    "create_kb",
    "delete_kb",
    "get_kb",
    "kb_status",
    "latest_snapshot",
    "list_kbs",
    "list_sources",
    "remove_source",
    "source_work_dir",
    "clear_source_work_dir",
]

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MODES = ("icl", "ft", "aug-ft")


def kb_dict(kb: KnowledgeBase) -> dict[str, Any]:
    """A KB as the CLI's --json output and the API show it."""
    return {
        "slug": kb.slug,
        "title": kb.title,
        "base_model": kb.base_model,
        "policy": kb.policy,
        "active_mode": kb.active_mode,
        "active_adapter": kb.active_adapter,
        "reader_groups": kb.reader_groups,
        "owner_groups": kb.owner_groups,
        "workload": kb.workload,
        "created_at": kb.created_at,
    }


def source_dict(source: Source) -> dict[str, Any]:
    return {
        "id": source.id,
        "kb_id": source.kb_id,
        "kind": source.kind,
        "config": source.config,
        "schedule": source.schedule,
        "last_sync_at": source.last_sync_at,
    }


def _check_slug(slug: str) -> str:
    if not SLUG_PATTERN.match(slug):
        raise InvalidInput(
            f"invalid KB name {slug!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'hr-policies')"
        )
    return slug


def create_kb(
    catalog: Catalog,
    slug: str,
    *,
    title: str = "",
    base_model: str | None = None,
    reader_groups: list[str] | None = None,
    owner_groups: list[str] | None = None,
) -> KnowledgeBase:
    _check_slug(slug)
    with catalog.session() as session:
        if session.scalar(select(KnowledgeBase).where(KnowledgeBase.slug == slug)) is not None:
            raise AlreadyExists(f"a KB named {slug!r} already exists; pick another name or delete it first")
        kb = KnowledgeBase(
            slug=slug,
            title=title or slug,
            reader_groups=list(reader_groups or []),
            owner_groups=list(owner_groups or []),
        )
        if base_model:
            kb.base_model = base_model
        session.add(kb)
        session.flush()
        return kb


def get_kb(catalog: Catalog, slug: str) -> KnowledgeBase:
    with catalog.session() as session:
        kb = session.scalar(select(KnowledgeBase).where(KnowledgeBase.slug == slug))
        if kb is None:
            raise NotFound(f"no KB named {slug!r}; list them with `kadapt kb list`")
        return kb


def list_kbs(catalog: Catalog) -> list[KnowledgeBase]:
    with catalog.session() as session:
        return list(session.scalars(select(KnowledgeBase).order_by(KnowledgeBase.slug)))


def delete_kb(catalog: Catalog, store, slug: str, settings: Settings | None = None) -> None:
    kb = get_kb(catalog, slug)
    store.drop(slug)
    with catalog.session() as session:
        source_ids = list(session.scalars(select(Source.id).where(Source.kb_id == kb.id)))
        session.execute(delete(KnowledgeBase).where(KnowledgeBase.id == kb.id))
    for source_id in source_ids:
        clear_source_work_dir(settings, source_id)


def source_work_dir(settings: Settings, source_id: int):
    return settings.data_dir / "sources" / str(source_id)


def clear_source_work_dir(settings: Settings | None, source_id: int) -> None:
    """Delete a source's work folder (a git mirror, a crawl cache): when the source goes, when its URL changes,
    and before a new source takes the folder's id, so that no cache outlives the config it was made for."""
    if settings is None:
        from kadapt.settings import get_settings

        settings = get_settings()
    shutil.rmtree(source_work_dir(settings, source_id), ignore_errors=True)


def add_source(
    catalog: Catalog,
    settings: Settings,
    slug: str,
    kind: str,
    config: dict[str, Any],
    *,
    schedule: str | None = None,
    plugins=None,
) -> Source:
    """Validate ``config`` with the connector's model and its own checks (allowed roots...), then store it."""
    kb = get_kb(catalog, slug)
    connector_class = get_connector_class(kind, plugins)
    validated = validate_config(connector_class, config)
    with catalog.session() as session:
        source = Source(kb_id=kb.id, kind=kind, config=validated.model_dump(mode="json"), schedule=schedule)
        session.add(source)
        session.flush()
        # a folder left under this id (by a source removed before folders were deleted with it) is not reused
        clear_source_work_dir(settings, source.id)
        work_dir = source_work_dir(settings, source.id)
        context = ConnectorContext(settings=settings, source_id=source.id, work_dir=work_dir)
        connector = connector_class(validated, context)
        connector.check()  # raises before the session commits, so a refused source is never stored
        return source


def list_sources(catalog: Catalog, slug: str | None = None) -> list[Source]:
    with catalog.session() as session:
        query = select(Source).order_by(Source.id)
        if slug is not None:
            query = query.where(Source.kb_id == get_kb(catalog, slug).id)
        return list(session.scalars(query))


def remove_source(catalog: Catalog, store, source_id: int, settings: Settings | None = None) -> Source:
    """Remove a source with its documents and their chunks. The next sync records a new snapshot."""
    with catalog.session() as session:
        source = session.get(Source, source_id)
        if source is None:
            raise NotFound(f"no source with id {source_id}; list them with `kadapt source list`")
        kb = session.get(KnowledgeBase, source.kb_id)
        assert kb is not None
        document_ids = list(session.scalars(select(Document.id).where(Document.source_id == source_id)))
    if document_ids:
        store.collection(kb.slug).delete(where={"source_id": source_id})
    with catalog.session() as session:
        session.execute(delete(Document).where(Document.source_id == source_id))
        session.execute(delete(DocumentError).where(DocumentError.source_id == source_id))
        session.execute(delete(Source).where(Source.id == source_id))
    clear_source_work_dir(settings, source_id)
    from kadapt.ingest import record_snapshot

    record_snapshot(catalog, kb.id)
    return source


def latest_snapshot(catalog: Catalog, kb_id: int) -> Snapshot | None:
    with catalog.session() as session:
        return session.scalar(select(Snapshot).where(Snapshot.kb_id == kb_id).order_by(Snapshot.id.desc()).limit(1))


def kb_status(catalog: Catalog, store, slug: str) -> dict[str, Any]:
    kb = get_kb(catalog, slug)
    snapshot = latest_snapshot(catalog, kb.id)
    with catalog.session() as session:
        documents = session.scalar(select(func.count()).select_from(Document).where(Document.kb_id == kb.id))
        chunks = session.scalar(select(func.coalesce(func.sum(Document.chunk_count), 0)).where(Document.kb_id == kb.id))
        errors = [
            {
                "source_id": error.source_id,
                "locator": error.locator,
                "message": error.message,
                "at": error.at.isoformat(),
            }
            for error in session.scalars(
                select(DocumentError).where(DocumentError.kb_id == kb.id).order_by(DocumentError.locator)
            )
        ]
        sources = session.scalar(select(func.count()).select_from(Source).where(Source.kb_id == kb.id))
        last_job = session.scalar(
            select(Job).where(Job.kb_id == kb.id, Job.kind == "sync").order_by(Job.created_at.desc()).limit(1)
        )
    return {
        "kb": kb.slug,
        "title": kb.title,
        "base_model": kb.base_model,
        "active_mode": kb.active_mode,
        "sources": sources,
        "documents": documents,
        "chunks": int(chunks or 0),
        "vectors": store.count(kb.slug),
        "snapshot": None
        if snapshot is None
        else {
            "id": snapshot.id,
            "hash": snapshot.hash,
            "documents": snapshot.document_count,
            "created_at": snapshot.created_at.isoformat(),
        },
        "last_sync": None
        if last_job is None
        else {
            "job": last_job.id,
            "state": last_job.state,
            "finished_at": last_job.finished_at.isoformat() if last_job.finished_at else None,
            "result": last_job.result,
        },
        "errors": errors,
        "decision": _decision_summary(catalog, slug),
    }


def _decision_summary(catalog: Catalog, slug: str) -> dict[str, Any] | None:
    from kadapt.policy import latest_decision

    decision = latest_decision(catalog, slug)
    if decision is None:
        return None
    return {
        "mode": decision.mode,
        "policy": decision.policy,
        "snapshot_id": decision.snapshot_id,
        "created_at": decision.created_at.isoformat(),
    }

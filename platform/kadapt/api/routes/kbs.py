"""Admin routes for knowledge bases, their sources, syncs and search (mirroring the CLI)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from kadapt.access import create_kb_as, kb_for_manager, kb_for_reader
from kadapt.api.deps import AdminDep, CatalogDep, PrincipalDep, SettingsDep, StoreDep
from kadapt.api.schemas import KBCreate, SourceCreate, SourceUpdate
from kadapt.errors import NotFound
from kadapt.kbs import (
    add_source,
    delete_kb,
    kb_status,
    list_kbs,
    list_sources,
    set_schedule,
    status_for_reader,
)
from kadapt.sync import remove_source
from kadapt.views import JobView, KBView, KBWithStatus, SourceView

router = APIRouter(prefix="/v1/kbs", tags=["knowledge bases"])


@router.get("")
def list_(catalog: CatalogDep, principal: AdminDep) -> list[KBView]:
    """KBs the caller may read (admin or editor)."""
    return [KBView.of(kb) for kb in list_kbs(catalog) if principal.can_read(kb)]


@router.post("", status_code=201)
def create(body: KBCreate, catalog: CatalogDep, settings: SettingsDep, principal: AdminDep) -> KBView:
    """Create a KB; an editor's KB is owned by the editor's groups unless others are given. Its model must be
    one the admin allows (KADAPT_DEFAULT_MODEL, KADAPT_ALLOWED_MODELS), else 403."""
    kb = create_kb_as(
        catalog,
        settings,
        principal,
        body.slug,
        title=body.title,
        base_model=body.base_model,
        reader_groups=body.reader_groups,
        owner_groups=body.owner_groups,
    )
    return KBView.of(kb)


@router.get("/{slug}")
def show(slug: str, catalog: CatalogDep, store: StoreDep, principal: AdminDep) -> KBWithStatus:
    """A KB with its status: documents, chunks, snapshot, document errors, last sync."""
    kb = kb_for_reader(catalog, principal, slug)
    status = kb_status(catalog, store, slug)
    if not principal.can_manage(kb):  # source and document errors can name hosts, folders and credentials
        status = status_for_reader(status)
    return KBWithStatus.of(kb, status=status)


@router.delete("/{slug}", status_code=204)
def delete(slug: str, catalog: CatalogDep, store: StoreDep, settings: SettingsDep, principal: AdminDep) -> None:
    """Delete a KB with its sources, documents, vectors and adapters, once its jobs have stopped (409 with
    Retry-After when they do not stop within KADAPT_KB_BUSY_WAIT_SECONDS; nothing is deleted then)."""
    kb_for_manager(catalog, principal, slug)
    delete_kb(catalog, store, slug, settings)


@router.get("/{slug}/sources")
def sources(slug: str, catalog: CatalogDep, principal: AdminDep) -> list[SourceView]:
    """The KB's sources (their configs may name private hosts or folders: managers of the KB only)."""
    kb_for_manager(catalog, principal, slug)
    return [SourceView.of(source) for source in list_sources(catalog, slug)]


@router.post("/{slug}/sources", status_code=201)
def add(slug: str, body: SourceCreate, catalog: CatalogDep, settings: SettingsDep, principal: AdminDep) -> SourceView:
    """Add a source; its config is validated by the connector (allowed roots, hosts) before it is stored."""
    kb_for_manager(catalog, principal, slug)
    return SourceView.of(add_source(catalog, settings, slug, body.kind, body.config, schedule=body.schedule))


@router.patch("/{slug}/sources/{source_id}")
def edit(slug: str, source_id: int, body: SourceUpdate, catalog: CatalogDep, principal: AdminDep) -> SourceView:
    """Change a source's sync schedule (null: none); it is next due at the schedule's first moment from now."""
    kb = kb_for_manager(catalog, principal, slug)
    if not any(source.id == source_id for source in list_sources(catalog, kb.slug)):
        raise NotFound(f"KB {slug!r} has no source {source_id}")
    return SourceView.of(set_schedule(catalog, source_id, body.schedule))


@router.delete("/{slug}/sources/{source_id}", status_code=204)
def remove(
    slug: str, source_id: int, catalog: CatalogDep, store: StoreDep, settings: SettingsDep, principal: AdminDep
) -> None:
    """Remove a source with its documents and their vectors."""
    kb = kb_for_manager(catalog, principal, slug)
    if not any(source.id == source_id for source in list_sources(catalog, kb.slug)):
        raise NotFound(f"KB {slug!r} has no source {source_id}")
    remove_source(catalog, store, source_id, settings)


@router.post("/{slug}/sync", status_code=202)
async def sync(slug: str, catalog: CatalogDep, principal: AdminDep) -> JobView:
    """Start a sync job; follow it at ``GET /v1/jobs/{id}``. One sync of a KB at a time: 409 names the running one."""
    from kadapt.jobs import get_job, submit

    kb = await run_in_threadpool(kb_for_manager, catalog, principal, slug)
    job_id = await run_in_threadpool(submit, catalog, "sync", kb_id=kb.id, params={"kb": slug}, wait=False)
    return JobView.of(await run_in_threadpool(get_job, catalog, job_id))


@router.get("/{slug}/search")
def search(
    slug: str,
    catalog: CatalogDep,
    store: StoreDep,
    principal: PrincipalDep,
    q: Annotated[str, Query(min_length=1, max_length=2000, description="What to look for.")],
    k: Annotated[int, Query(ge=1, le=50)] = 5,
) -> list[dict[str, Any]]:
    """Semantic search over the KB's chunks (any role that may read the KB), among the documents the caller may
    read (a document's readers, from its source, restrict it to their groups)."""
    kb = kb_for_reader(catalog, principal, slug)
    return [hit.__dict__ for hit in store.search(kb, q, k, audience=principal.audience)]

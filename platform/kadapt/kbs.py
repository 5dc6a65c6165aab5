"""Knowledge bases and their sources: the operations the CLI and the API share."""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from kadapt.allowances import source_allowances
from kadapt.catalog import (
    Adapter,
    Catalog,
    Decision,
    Document,
    DocumentError,
    Job,
    KnowledgeBase,
    Snapshot,
    Source,
    utcnow,
)
from kadapt.catalog.models import utc
from kadapt.connectors import ConnectorContext, get_connector_class, validate_config
from kadapt.errors import AlreadyExists, InvalidInput, KBBusy, NotFound, PermissionDenied
from kadapt.modes import FINE_TUNED_MODES
from kadapt.settings import Settings

__all__ = [
    "SLUG_PATTERN",
    "add_source",
    "allowed_models",
    "check_model",
    "kb_busy",
    "kb_busy_lock",
    "create_kb",
    "delete_kb",
    "get_kb",
    "kb_status",
    "kb_health",
    "HEALTH_STATES",
    "latest_decision",
    "latest_snapshot",
    "list_kbs",
    "list_sources",
    "set_schedule",
    "delete_source",
    "source_work_dir",
    "clear_source_work_dir",
    "kb_folders",
]

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def _check_slug(slug: str) -> str:
    if not SLUG_PATTERN.match(slug):
        raise InvalidInput(
            f"invalid KB name {slug!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'hr-policies')"
        )
    return slug


def allowed_models(settings: Settings) -> list[str]:
    """The models a KB may be created with: ``KADAPT_DEFAULT_MODEL`` and ``KADAPT_ALLOWED_MODELS``."""
    return list(dict.fromkeys([settings.default_model, *settings.allowed_models]))


def check_model(settings: Settings, model: str | None) -> str:
    """The base model for a new KB: ``model`` if the admin's list allows it, else PermissionDenied naming the
    list and the setting; no model means ``KADAPT_DEFAULT_MODEL``. A ``lora-server:`` name (another KB's adapter
    on the LoRA server) is never taken, nor any other name (an organisation's hosted model, a local path)."""
    if model is None or not model.strip():
        return settings.default_model
    model = model.strip()
    allowed = allowed_models(settings)
    listed = ", ".join(repr(name) for name in allowed)
    if model.startswith("lora-server:"):
        raise PermissionDenied(
            f"model {model!r} is refused: 'lora-server:' names a KB's own adapter on the LoRA server, never the "
            f"model of a KB; choose one of {listed} (an admin lists them in KADAPT_ALLOWED_MODELS)"
        )
    if model not in allowed:
        raise PermissionDenied(
            f"model {model!r} is not allowed for a KB; choose one of {listed}, or ask an admin to add it to "
            "KADAPT_ALLOWED_MODELS"
        )
    return model


def _name_unavailable(slug: str) -> AlreadyExists:
    # the same answer for a name taken by a KB the caller cannot see as for any other unavailable name: it
    # must not confirm that a KB of that name exists
    return AlreadyExists(f"KB name {slug!r} is not available; choose another name")


def create_kb(
    catalog: Catalog,
    slug: str,
    *,
    title: str = "",
    base_model: str | None = None,
    reader_groups: list[str] | None = None,
    owner_groups: list[str] | None = None,
    settings: Settings | None = None,
    can_see: Callable[[KnowledgeBase], bool] | None = None,
) -> KnowledgeBase:
    """Create a KB. ``base_model`` must be one the admin allows (:func:`check_model`). A name already taken
    is "already exists" to a caller who may see that KB (``can_see``; None: any caller, e.g. the operator's
    CLI) and "not available" to any other."""
    from kadapt.settings import get_settings

    _check_slug(slug)
    model = check_model(settings or get_settings(), base_model)
    try:
        with catalog.session() as session:
            existing = session.scalar(select(KnowledgeBase).where(KnowledgeBase.slug == slug))
            if existing is not None:
                if can_see is None or can_see(existing):
                    raise AlreadyExists(f"a KB named {slug!r} already exists; pick another name or delete it first")
                raise _name_unavailable(slug)
            kb = KnowledgeBase(
                slug=slug,
                title=title or slug,
                base_model=model,
                reader_groups=list(reader_groups or []),
                owner_groups=list(owner_groups or []),
            )
            session.add(kb)
            session.flush()
            return kb
    except IntegrityError:  # created meanwhile by another request
        raise _name_unavailable(slug) from None


def get_kb(catalog: Catalog, slug: str) -> KnowledgeBase:
    with catalog.session() as session:
        kb = session.scalar(select(KnowledgeBase).where(KnowledgeBase.slug == slug))
        if kb is None:
            raise NotFound(f"no KB named {slug!r}; list them with `kadapt kb list`")
        return kb


def list_kbs(catalog: Catalog) -> list[KnowledgeBase]:
    with catalog.session() as session:
        return list(session.scalars(select(KnowledgeBase).order_by(KnowledgeBase.slug)))


@contextmanager
def kb_busy_lock(catalog: Catalog, kb: KnowledgeBase, owner: str, settings: Settings, *, wait_seconds: float = 0.0):
    """Hold the KB's lock (one sync, source removal or deletion at a time), waiting up to ``wait_seconds``;
    else KBBusy naming the holder (a sync names its job)."""
    from kadapt.locks import LockHolder, held, kb_lock

    try:
        with held(catalog, kb_lock(kb.id), owner, settings.lock_lease_seconds, wait_seconds=wait_seconds) as lost:
            yield lost
    except LockHolder as exc:
        raise kb_busy(kb, exc.owner, settings) from None


def kb_busy(kb: KnowledgeBase, holder: str, settings: Settings) -> KBBusy:
    """The error for a KB whose lock ``holder`` holds: a sync's job (``<job id>:<attempt>``), or a deletion
    or source removal."""
    sync = re.fullmatch(r"([0-9a-f]{32})(?::[0-9a-f]+)?", holder)
    if sync:
        holder = sync.group(1)
        return KBBusy(
            f"KB {kb.slug!r} is busy: a sync runs as job {holder}; retry when it has finished (`kadapt jobs`), "
            f"or cancel it (`kadapt jobs cancel {holder}`)",
            retry_after=max(1, round(settings.lock_lease_seconds / 4)),
        )
    return KBBusy(
        f"KB {kb.slug!r} is busy: {holder} is under way; retry when it has finished",
        retry_after=max(1, round(settings.lock_lease_seconds / 4)),
    )


def kb_folders(settings: Settings, kb: KnowledgeBase) -> list[Path]:
    """Every folder kadapt writes for one KB (adapters, pilot adapters, reports), named by id, and for a KB
    made before ids named them, by slug."""
    folders = [settings.data_dir / "adapters" / f"kb-{kb.id}", settings.data_dir / "pilots" / f"kb-{kb.id}"]
    folders.append(settings.data_dir / "reports" / kb.slug)  # a report is output for people, named as they know it
    if kb.legacy_slug:
        folders += [settings.data_dir / "adapters" / kb.legacy_slug, settings.data_dir / "pilots" / kb.legacy_slug]
    return folders


def _stop_jobs(catalog: Catalog, kb: KnowledgeBase, settings: Settings, deadline: float) -> None:
    """Cancel every job of the KB that has not ended and wait until none runs, up to ``deadline``; else KBBusy."""
    from kadapt.jobs import TERMINAL_STATES, cancel_job, recover_interrupted

    recover_interrupted(catalog, stale_after=settings.job_stale_seconds)  # a dead process's job runs no more
    while True:
        with catalog.session() as session:
            active = list(session.execute(select(Job.id, Job.state).where(Job.kb_id == kb.id)))
        running = []
        for job_id, state in active:
            if state in TERMINAL_STATES:
                continue
            if cancel_job(catalog, job_id).state not in TERMINAL_STATES:
                running.append(job_id)
        if not running:
            return
        if time.monotonic() >= deadline:
            raise KBBusy(
                f"KB {kb.slug!r} was not deleted: job {running[0]} was asked to stop and is still running after "
                f"{settings.kb_busy_wait_seconds:g} s (KADAPT_KB_BUSY_WAIT_SECONDS); retry when it has stopped "
                "(`kadapt jobs`)",
                retry_after=max(1, round(settings.kb_busy_wait_seconds) or 5),
            )
        time.sleep(0.1)


def delete_kb(catalog: Catalog, store, slug: str, settings: Settings | None = None) -> None:
    """Delete a KB so that nothing of it outlives it: its jobs are cancelled and waited for (up to
    ``KADAPT_KB_BUSY_WAIT_SECONDS``, else :class:`KBBusy` and nothing is deleted), then, under the KB's lock
    (no sync can start), its rows, its Chroma collection, its adapter folders and source work folders go,
    and its adapter is withdrawn from the LoRA server export (and from the server, when one is set)."""
    from kadapt.settings import get_settings

    settings = settings or get_settings()
    kb = get_kb(catalog, slug)
    deadline = time.monotonic() + settings.kb_busy_wait_seconds
    _stop_jobs(catalog, kb, settings, deadline)
    owner = f"deletion {uuid.uuid4().hex[:12]}"
    with kb_busy_lock(catalog, kb, owner, settings, wait_seconds=max(0.0, deadline - time.monotonic())):
        _stop_jobs(catalog, kb, settings, deadline)  # any job submitted meanwhile (a sync cannot take the lock)
        with catalog.session() as session:
            source_ids = list(session.scalars(select(Source.id).where(Source.kb_id == kb.id)))
            adapter_paths = [Path(path) for path in session.scalars(select(Adapter.path).where(Adapter.kb_id == kb.id))]
            session.execute(delete(KnowledgeBase).where(KnowledgeBase.id == kb.id))
        store.drop(kb)
        data_dir = settings.data_dir.resolve()
        for folder in [*kb_folders(settings, kb), *adapter_paths]:
            if folder.resolve().is_relative_to(data_dir):  # a path from the catalog is removed only in kadapt's dir
                shutil.rmtree(folder, ignore_errors=True)
        for source_id in source_ids:
            clear_source_work_dir(settings, source_id)
        if adapter_paths or kb.active_adapter:
            from kadapt.lora_server import withdraw_adapter

            withdraw_adapter(kb.slug, settings)  # a LoRA server that is down only gets a warning


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
    from kadapt.schedules import check_schedule, next_sync

    kb = get_kb(catalog, slug)
    connector_class = get_connector_class(kind, plugins)
    validated = validate_config(connector_class, config)
    schedule = check_schedule(schedule)
    with catalog.session() as session:
        source = Source(
            kb_id=kb.id,
            kind=kind,
            config=validated.model_dump(mode="json"),
            schedule=schedule,
            next_sync_at=next_sync(schedule, utcnow()) if schedule else None,
        )
        session.add(source)
        session.flush()
        # a folder left under this id (by a source removed before folders were deleted with it) is not reused
        clear_source_work_dir(settings, source.id)
        work_dir = source_work_dir(settings, source.id)
        context = ConnectorContext(
            settings=settings,
            source_id=source.id,
            work_dir=work_dir,
            allowances=source_allowances(settings, kb.owner_groups),
        )
        connector = connector_class(validated, context)
        connector.check()  # raises before the session commits, so a refused source is never stored
        return source


def set_schedule(catalog: Catalog, source_id: int, schedule: str | None) -> Source:
    """Give source ``source_id`` a sync schedule (a cron expression; None or blank: none), due next at the
    schedule's first moment from now."""
    from kadapt.schedules import check_schedule, next_sync

    schedule = check_schedule(schedule)
    with catalog.session() as session:
        source = session.get(Source, source_id)
        if source is None:
            raise NotFound(f"no source {source_id}")
        source.schedule = schedule
        source.next_sync_at = next_sync(schedule, utcnow()) if schedule else None
        return source


def list_sources(catalog: Catalog, slug: str | None = None) -> list[Source]:
    with catalog.session() as session:
        query = select(Source).order_by(Source.id)
        if slug is not None:
            query = query.where(Source.kb_id == get_kb(catalog, slug).id)
        return list(session.scalars(query))


def delete_source(catalog: Catalog, store, source_id: int, settings: Settings | None = None) -> Source:
    """Delete a source with its documents and their chunks (the snapshot that follows is
    :func:`kadapt.sync.remove_source`'s).

    It holds the KB's lock: a sync of the KB running meanwhile is waited for (up to
    ``KADAPT_KB_BUSY_WAIT_SECONDS``, else :class:`KBBusy`), so that no chunk of the source is written after it."""
    from kadapt.settings import get_settings

    settings = settings or get_settings()
    with catalog.session() as session:
        source = session.get(Source, source_id)
        if source is None:
            raise NotFound(f"no source with id {source_id}; list them with `kadapt source list`")
        kb = session.get(KnowledgeBase, source.kb_id)
        assert kb is not None
    owner = f"removal of source {source_id} {uuid.uuid4().hex[:8]}"
    with kb_busy_lock(catalog, kb, owner, settings, wait_seconds=settings.kb_busy_wait_seconds):
        with catalog.session() as session:
            if session.get(Source, source_id) is None:  # removed meanwhile
                return source
        store.collection(kb).delete(where={"source_id": source_id})  # chunks whatever the catalog says
        with catalog.session() as session:
            session.execute(delete(Document).where(Document.source_id == source_id))
            session.execute(delete(DocumentError).where(DocumentError.source_id == source_id))
            session.execute(delete(Source).where(Source.id == source_id))
        clear_source_work_dir(settings, source_id)
    return source


def latest_decision(catalog: Catalog, slug: str) -> Decision | None:
    """The KB's latest decision (None before its first)."""
    kb = get_kb(catalog, slug)
    with catalog.session() as session:
        return session.scalar(select(Decision).where(Decision.kb_id == kb.id).order_by(Decision.id.desc()).limit(1))


def latest_snapshot(catalog: Catalog, kb_id: int) -> Snapshot | None:
    with catalog.session() as session:
        return session.scalar(select(Snapshot).where(Snapshot.kb_id == kb_id).order_by(Snapshot.id.desc()).limit(1))


def _freshness(catalog: Catalog, kb: KnowledgeBase) -> dict[str, Any] | None:
    """For a KB served from an adapter: its snapshot, and the documents added, changed and removed since, which
    chat reads from the prompt until the adapter is trained again (None for a KB served otherwise)."""
    from kadapt.delta import adapter_delta
    from kadapt.settings import get_settings

    # aug-ft+rag retrieves from the current documents at every question: nothing waits for a retrain
    if not kb.active_adapter or kb.active_mode not in FINE_TUNED_MODES:
        return None
    with catalog.session() as session:
        adapter = session.get(Adapter, kb.active_adapter)
    if adapter is None:
        return None
    delta = adapter_delta(catalog, adapter)  # what chat reads from the prompt, withdrawn documents included
    return {"adapter": adapter.id, "warm_starts": adapter.warm_starts} | delta.summary(get_settings())


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
        next_sync = session.scalar(select(func.min(Source.next_sync_at)).where(Source.kb_id == kb.id))
        last_job = session.scalar(
            select(Job).where(Job.kb_id == kb.id, Job.kind == "sync").order_by(Job.created_at.desc()).limit(1)
        )
    status = {
        "kb": kb.slug,
        "title": kb.title,
        "base_model": kb.base_model,
        "active_mode": kb.active_mode,
        "sources": sources,
        "documents": documents,
        "chunks": int(chunks or 0),
        "vectors": store.count(kb),
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
        # the first of its sources' scheduled syncs (SQLite gives the UTC time back without its zone)
        "next_sync": utc(next_sync).isoformat() if next_sync else None,
        "freshness": _freshness(catalog, kb),
        "errors": errors,
        "decision": _decision_summary(catalog, slug),
    }
    return status | {"health": kb_health(status)}


# a KB's health, worst first: what a dashboard badge says, and the sentence that explains it
HEALTH_STATES = {
    "sync-failed": "last sync failed",
    "errors": "document errors",
    "stale": "stale adapter",
    "undecided": "never decided",
    "empty": "no documents",
    "healthy": "healthy",
}


def kb_health(status: dict[str, Any]) -> dict[str, Any]:
    """The KB's health from :func:`kb_status`: ``state`` (a key of :data:`HEALTH_STATES`, the worst that holds),
    its ``label``, and ``problems``, one sentence for each that holds, worst first."""
    problems: list[tuple[str, str]] = []
    last_sync = status.get("last_sync") or {}
    if last_sync.get("state") == "failed":
        problems.append(("sync-failed", "The last sync failed; the KB still serves what the sync before it read."))
    if status.get("errors"):
        count = len(status["errors"])
        problems.append(("errors", f"{count} document{'' if count == 1 else 's'} could not be read."))
    if (status.get("freshness") or {}).get("stale"):
        problems.append(("stale", "The adapter is stale: too much changed since it was trained; train it again."))
    if not status.get("documents"):
        problems.append(("empty", "No documents yet: add a source and sync it."))
    elif status.get("decision") is None:
        problems.append(("undecided", "Never decided: Adapt measures the modes and picks one."))
    state = problems[0][0] if problems else "healthy"
    return {"state": state, "label": HEALTH_STATES[state], "problems": [text for _, text in problems]}


READER_DOCUMENT_ERROR = "could not be read; a manager of the KB can see why"


def result_counts(result: dict[str, Any] | None) -> dict[str, Any]:
    """A job's result as readers of its KB see it: the counts only (its lists and texts, such as a sync's source
    errors, can name URLs, folders and credentials)."""
    return {key: value for key, value in (result or {}).items() if isinstance(value, int | float | bool)}


def status_for_reader(status: dict[str, Any]) -> dict[str, Any]:
    """:func:`kb_status` as someone who may read but not manage the KB sees it: a sync's source errors and a
    document's error can name folders, hosts, repositories and the data directory, so they are left out."""
    status = dict(status)
    if status.get("last_sync"):
        result = status["last_sync"].get("result") or {}
        status["last_sync"] = status["last_sync"] | {"result": result_counts(result)}
    status["errors"] = [error | {"message": READER_DOCUMENT_ERROR} for error in status.get("errors", [])]
    return status


def _decision_summary(catalog: Catalog, slug: str) -> dict[str, Any] | None:
    decision = latest_decision(catalog, slug)
    if decision is None:
        return None
    return {
        "mode": decision.mode,
        "policy": decision.policy,
        "snapshot_id": decision.snapshot_id,
        "created_at": decision.created_at.isoformat(),
    }

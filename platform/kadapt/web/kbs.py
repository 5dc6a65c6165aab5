"""Console pages for admins and editors: the dashboard, a KB with its sources, syncs and decision."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from kadapt.access import create_kb_as, kb_for_manager, kb_for_reader, show_job, visible_jobs
from kadapt.allowances import source_allowances
from kadapt.catalog import KnowledgeBase, Source
from kadapt.catalog.models import utc
from kadapt.connectors import ConnectorContext, get_connector_class, validate_config
from kadapt.costs import Workload
from kadapt.errors import InvalidInput, KadaptError, NotFound
from kadapt.ingest import SYNC_IN_PROGRESS
from kadapt.jobs import TERMINAL_STATES, submit
from kadapt.kbs import (
    add_source,
    clear_source_work_dir,
    kb_status,
    latest_decision,
    list_kbs,
    list_sources,
    set_schedule,
    source_work_dir,
    status_for_reader,
)
from kadapt.modes import MODES, trained_mode
from kadapt.schedules import check_schedule
from kadapt.sync import remove_source
from kadapt.views import DecisionView, SourceView
from kadapt.web.forms import config_fields, config_from_form, field_name
from kadapt.web.render import PREFIX, PageRoute, render
from kadapt.web.session import AdminUserDep, FormDep, UserDep, WebUser

router = APIRouter(route_class=PageRoute)


def _groups(text: str) -> list[str]:
    return [group.strip() for group in text.split(",") if group.strip()]


def error_status(exc: KadaptError) -> int:
    return 400 if exc.status_code in (404, 422) else exc.status_code  # a form's bad value, not a missing page


def _status_for(user: WebUser, kb, status: dict[str, Any]) -> dict[str, Any]:
    return status if user.principal.can_manage(kb) else status_for_reader(status)


def _dashboard(request: Request, user: WebUser, *, error: str | None = None, status: int = 200, form=None):
    catalog, store = request.app.state.catalog, request.app.state.store()
    kbs = [kb for kb in list_kbs(catalog) if user.principal.can_read(kb)]
    rows = [
        _status_for(user, kb, kb_status(catalog, store, kb.slug)) | {"slug": kb.slug, "title": kb.title} for kb in kbs
    ]
    slugs = {kb.id: kb.slug for kb in kbs}
    jobs = [job.json_data() | {"kb": slugs.get(job.kb_id)} for job in visible_jobs(catalog, user.principal, limit=20)]
    return render(request, "dashboard.html.j2", user, status=status, kbs=rows, jobs=jobs, error=error, form=form or {})


@router.get("/")
def dashboard(request: Request, user: UserDep) -> Response:
    """KBs with their documents, snapshot, errors, mode and decision; recent jobs. Readers go to the chat."""
    if not user.principal.can_administer:
        return RedirectResponse(f"{PREFIX}/chat", status_code=303)
    return _dashboard(request, user)


@router.post("/kbs")
def create(request: Request, user: AdminUserDep, form: FormDep) -> Response:
    """Create a KB (an editor's KB is owned by their groups unless others are given)."""
    catalog, settings = request.app.state.catalog, request.app.state.settings
    try:
        kb = create_kb_as(
            catalog,
            settings,
            user.principal,
            form.get("slug", "").strip(),
            title=form.get("title", "").strip(),
            reader_groups=_groups(form.get("reader_groups", "")),
            owner_groups=_groups(form.get("owner_groups", "")) or None,
        )
    except KadaptError as exc:
        return _dashboard(request, user, error=exc.message, status=error_status(exc), form=form)
    return RedirectResponse(f"{PREFIX}/kbs/{kb.slug}", status_code=303)


def decision_context(catalog, slug: str) -> dict[str, Any]:
    """What the decision panel shows: the latest decision, its summary table and headline (None before one)."""
    from kadapt.policy import decision_summary

    decision = latest_decision(catalog, slug)
    if decision is None:
        return {"decision": None, "summary": None}
    return {"decision": DecisionView.of(decision).json_data(), "summary": decision_summary(decision)}


def _source_rows(catalog, slug: str, manager: bool) -> list[dict[str, Any]]:
    """The KB's sources; a source's config (folders, hosts, repositories) is for those who manage the KB."""
    rows = []
    for source in list_sources(catalog, slug):
        if not manager:
            rows.append({"id": source.id, "kind": source.kind, "last_sync_at": source.last_sync_at})
            continue
        row = SourceView.of(source).model_dump() | {"config": source.config or {}}
        # shown as UTC: PostgreSQL hands times back in its session's zone
        row |= {key: utc(getattr(source, key)) for key in ("next_sync_at", "last_sync_at") if getattr(source, key)}
        rows.append(row)
    return rows


def _followed_job(catalog, user: WebUser, job_id: str | None, last_sync) -> dict[str, Any] | None:
    """The job the page follows: the one asked for, else a sync still running."""
    if job_id is None and last_sync and last_sync["state"] not in TERMINAL_STATES:
        job_id = last_sync["job"]
    if not job_id:
        return None
    try:
        return show_job(catalog, user.principal, job_id).json_data()
    except NotFound:
        return None


def show_kb_page(
    request: Request, user: WebUser, slug: str, *, job_id: str | None = None, error: str | None = None, status=200
) -> Response:
    from kadapt.adapters import list_adapters
    from kadapt.plugins import get_plugins

    catalog, store = request.app.state.catalog, request.app.state.store()
    kb = kb_for_reader(catalog, user.principal, slug)
    kb_state = _status_for(user, kb, kb_status(catalog, store, slug))
    manager = user.principal.can_manage(kb)
    connectors = get_plugins().connectors()
    ready = {adapter.mode for adapter in list_adapters(catalog, slug) if adapter.state == "ready"}
    return render(
        request,
        "kb.html.j2",
        user,
        status=status,
        kb=kb,
        status_data=kb_state,
        sources=_source_rows(catalog, slug, manager),
        connectors={kind: config_fields(connectors[kind]) for kind in sorted(connectors)},
        field_name=field_name,
        modes=MODES,
        workload=Workload.from_dict(kb.workload).to_dict(),
        available_modes=[mode for mode in MODES if mode == "icl" or trained_mode(mode) in ready],
        can_manage=manager,
        job=_followed_job(catalog, user, job_id, kb_state["last_sync"]),
        terminal=TERMINAL_STATES,
        error=error,
        **decision_context(catalog, slug),
    )


@router.get("/kbs/{slug}")
def kb_page(request: Request, slug: str, user: AdminUserDep, job: str | None = None) -> Response:
    """A KB: status, decision with its rationale, document errors, sources and their forms."""
    return show_kb_page(request, user, slug, job_id=job)


@router.get("/kbs/{slug}/status")
def kb_status_fragment(request: Request, slug: str, user: AdminUserDep) -> Response:
    """The KB page's status panel alone, refreshed by the page when a sync finishes."""
    catalog, store = request.app.state.catalog, request.app.state.store()
    kb = kb_for_reader(catalog, user.principal, slug)
    status_data = _status_for(user, kb, kb_status(catalog, store, slug))
    return render(request, "kb_status.html.j2", user, kb=kb, status_data=status_data)


def _config(kind: str, form: dict[str, str]) -> dict[str, Any]:
    """A source's config from the form: the options of its kind's generated fields, over an optional JSON object
    (``config``, kept for scripts and for options no field shows)."""
    text = form.get("config", "").strip()
    try:
        config = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f'the config is not valid JSON ({exc.msg} at line {exc.lineno}); e.g. {{"path": "/srv/docs"}}'
        ) from None
    if not isinstance(config, dict):
        raise InvalidInput('the config must be a JSON object, e.g. {"path": "/srv/docs"}')
    if form.get("path", "").strip():
        config["path"] = form["path"].strip()
    return config | config_from_form(get_connector_class(kind), kind, form)


@router.post("/kbs/{slug}/sources")
def add(request: Request, slug: str, user: AdminUserDep, form: FormDep) -> Response:
    """Add a source; the connector validates its config (allowed roots, hosts) before it is stored."""
    catalog, settings = request.app.state.catalog, request.app.state.settings
    kb_for_manager(catalog, user.principal, slug)
    try:
        kind = form.get("kind", "")
        add_source(catalog, settings, slug, kind, _config(kind, form), schedule=form.get("schedule"))
    except KadaptError as exc:
        return show_kb_page(request, user, slug, error=exc.message, status=error_status(exc))
    return RedirectResponse(f"{PREFIX}/kbs/{slug}#sources", status_code=303)


def _kb_source(catalog, slug: str, source_id: int) -> Source:
    source = next((source for source in list_sources(catalog, slug) if source.id == source_id), None)
    if source is None:
        raise NotFound(f"KB {slug!r} has no source {source_id}")
    return source


def _update_source(catalog, settings, source_id: int, config: dict[str, Any]) -> None:
    """Validate and store a source's new config, checked by its connector exactly as when it was added."""
    with catalog.session() as session:
        source = session.get(Source, source_id)
        if source is None:
            raise NotFound(f"no source with id {source_id}")
        connector_class = get_connector_class(source.kind)
        validated = validate_config(connector_class, config)
        url_changed = (source.config or {}).get("url") != validated.model_dump(mode="json").get("url")
        source.config = validated.model_dump(mode="json")
        # bookkeeping of the old config (a last commit, a crawl) does not apply to the new one; the mark of an
        # unfinished sync stays, so the next sync still cleans up after it
        source.state = {key: value for key, value in (source.state or {}).items() if key == SYNC_IN_PROGRESS}
        kb = session.get(KnowledgeBase, source.kb_id)
        context = ConnectorContext(
            settings=settings,
            source_id=source_id,
            work_dir=source_work_dir(settings, source_id),
            allowances=source_allowances(settings, kb.owner_groups if kb else ()),
        )
        connector_class(validated, context).check()  # raises before the session commits
        if url_changed:  # a mirror of the old URL is never fetched into from the new one
            clear_source_work_dir(settings, source_id)


@router.post("/kbs/{slug}/sources/{source_id}/edit")
def edit(request: Request, slug: str, source_id: int, user: AdminUserDep, form: FormDep) -> Response:
    """Change a source's config and schedule; the next sync reads it (documents it no longer lists are removed)."""
    catalog, settings = request.app.state.catalog, request.app.state.settings
    kb_for_manager(catalog, user.principal, slug)
    source = _kb_source(catalog, slug, source_id)
    try:
        schedule = check_schedule(form.get("schedule", source.schedule or ""))  # checked before anything is stored
        _update_source(catalog, settings, source_id, _config(source.kind, form))
        if schedule != source.schedule:
            set_schedule(catalog, source_id, schedule)
    except KadaptError as exc:
        return show_kb_page(request, user, slug, error=f"source {source_id}: {exc.message}", status=error_status(exc))
    return RedirectResponse(f"{PREFIX}/kbs/{slug}#source-{source_id}", status_code=303)


@router.post("/kbs/{slug}/sources/{source_id}/remove")
def remove(request: Request, slug: str, source_id: int, user: AdminUserDep, form: FormDep) -> Response:
    """Remove a source with its documents and their vectors."""
    catalog = request.app.state.catalog
    kb_for_manager(catalog, user.principal, slug)
    _kb_source(catalog, slug, source_id)
    remove_source(catalog, request.app.state.store(), source_id, request.app.state.settings)
    return RedirectResponse(f"{PREFIX}/kbs/{slug}#sources", status_code=303)


@router.post("/kbs/{slug}/sync")
def sync(request: Request, slug: str, user: AdminUserDep, form: FormDep) -> Response:
    """Start a sync job, then show the KB page following its progress."""
    catalog = request.app.state.catalog
    kb = kb_for_manager(catalog, user.principal, slug)
    job_id = submit(catalog, "sync", kb_id=kb.id, params={"kb": slug}, wait=False)
    return RedirectResponse(f"{PREFIX}/kbs/{slug}?job={job_id}#sync", status_code=303)

"""Console actions that teach a KB to the model, for those who manage it: Adapt (measure every mode and decide),
Train an adapter, Set the serving mode, Set the workload; the decision panel, refreshed when a job ends; and the
KB's documents with their status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import or_, select

from kadapt.access import kb_for_manager, kb_for_reader
from kadapt.catalog import Document, DocumentError
from kadapt.errors import InvalidInput, KadaptError
from kadapt.jobs import submit
from kadapt.modes import FINE_TUNED_MODES, MODES
from kadapt.readers import may_read, stored_readers
from kadapt.web.kbs import decision_context, error_status, show_kb_page
from kadapt.web.render import PREFIX, PageRoute, render
from kadapt.web.session import AdminUserDep, FormDep, WebUser

router = APIRouter(route_class=PageRoute)

DOCUMENTS_PER_PAGE = 50
# workload fields a form sets, with their labels (the names of kadapt.costs.Workload)
WORKLOAD_FIELDS = {
    "queries_per_day": "Queries per day",
    "horizon_days": "Horizon (days)",
    "accuracy_floor": "Accuracy requirement",
    "budget_usd": "Budget (USD)",
}


@router.get("/kbs/{slug}/decision")
def decision_fragment(request: Request, slug: str, user: AdminUserDep) -> Response:
    """The KB page's decision panel alone, refreshed by the page when an Adapt job ends."""
    catalog = request.app.state.catalog
    kb = kb_for_reader(catalog, user.principal, slug)
    context = decision_context(catalog, slug)
    return render(request, "kb_decision.html.j2", user, kb=kb, can_manage=user.principal.can_manage(kb), **context)


def _start(request: Request, user: WebUser, slug: str, kind: str, params: dict[str, Any]) -> Response:
    catalog = request.app.state.catalog
    kb = kb_for_manager(catalog, user.principal, slug)
    try:
        job_id = submit(catalog, kind, kb_id=kb.id, params={"kb": slug} | params, wait=False)
    except KadaptError as exc:  # refused before it starts: a KB too large for the mode, a busy KB, ...
        return show_kb_page(request, user, slug, error=exc.message, status=error_status(exc))
    return RedirectResponse(f"{PREFIX}/kbs/{slug}?job={job_id}#lifecycle", status_code=303)


@router.post("/kbs/{slug}/adapt")
def adapt(request: Request, slug: str, user: AdminUserDep, form: FormDep) -> Response:
    """Start an Adapt job: sync, probes, measure every mode, decide, train and serve the chosen one."""
    return _start(request, user, slug, "adapt", {})


@router.post("/kbs/{slug}/train")
def train(request: Request, slug: str, user: AdminUserDep, form: FormDep) -> Response:
    """Start training an adapter of the chosen fine-tuned mode, served when ready if asked."""
    from kadapt.adapters import train_job_params

    mode = form.get("mode", "ft")
    if mode not in FINE_TUNED_MODES:
        error = f"train: mode must be one of {', '.join(FINE_TUNED_MODES)}, not {mode!r}"
        return show_kb_page(request, user, slug, error=error, status=400)
    params = train_job_params(
        slug, mode, {}, activate=form.get("activate") == "on", warm_start=form.get("warm_start") == "on"
    )
    return _start(request, user, slug, "train", params)


@router.post("/kbs/{slug}/mode")
def set_mode(request: Request, slug: str, user: AdminUserDep, form: FormDep) -> Response:
    """Serve the KB in another mode (a fine-tuned one needs a ready adapter of that mode)."""
    from kadapt.activation import set_mode as set_kb_mode

    catalog = request.app.state.catalog
    kb_for_manager(catalog, user.principal, slug)
    mode = form.get("mode", "")
    try:
        if mode not in MODES:
            raise InvalidInput(f"set mode: {mode!r} is not a mode; use one of {', '.join(MODES)}")
        set_kb_mode(catalog, slug, mode)
    except KadaptError as exc:
        return show_kb_page(request, user, slug, error=exc.message, status=error_status(exc))
    return RedirectResponse(f"{PREFIX}/kbs/{slug}#lifecycle", status_code=303)


def _number(form: dict[str, str], name: str) -> float | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidInput(f"{WORKLOAD_FIELDS[name].lower()}: {text!r} is not a number") from None


@router.post("/kbs/{slug}/workload")
def set_workload(request: Request, slug: str, user: AdminUserDep, form: FormDep) -> Response:
    """Change the KB's workload; a measured KB is decided again at once, from its last measurements."""
    from kadapt.policy import set_workload as set_kb_workload

    catalog = request.app.state.catalog
    kb_for_manager(catalog, user.principal, slug)
    try:
        changes = {name: _number(form, name) for name in WORKLOAD_FIELDS}
        changes = {name: value for name, value in changes.items() if value is not None}
        emptied = () if form.get("budget_usd", "").strip() else ("budget_usd",)  # an emptied budget: no budget
        set_kb_workload(catalog, slug, changes, clear=emptied)
    except KadaptError as exc:
        return show_kb_page(request, user, slug, error=exc.message, status=error_status(exc))
    return RedirectResponse(f"{PREFIX}/kbs/{slug}#decision", status_code=303)


def _documents(catalog, kb, query: str, status: str, audience, page: int) -> tuple[list[dict[str, Any]], int]:
    """A page of the KB's documents matching ``query`` (title or locator), and those that could not be read."""
    rows: list[dict[str, Any]] = []
    with catalog.session() as session:
        if status in ("", "read"):
            where = [Document.kb_id == kb.id]
            if query:
                pattern = f"%{query}%"
                where.append(or_(Document.title.ilike(pattern), Document.locator.ilike(pattern)))
            for document in session.scalars(select(Document).where(*where).order_by(Document.locator)):
                if may_read(stored_readers(document.meta), audience):
                    rows.append(
                        {"id": document.id, "title": document.title or document.locator, "locator": document.locator}
                        | {"source_id": document.source_id, "chunks": document.chunk_count, "status": "read"}
                        | {"updated_at": document.updated_at, "error": None}
                    )
        if status in ("", "error"):
            where = [DocumentError.kb_id == kb.id]
            if query:
                where.append(DocumentError.locator.ilike(f"%{query}%"))
            for error in session.scalars(select(DocumentError).where(*where).order_by(DocumentError.locator)):
                rows.append(
                    {"id": None, "title": error.locator, "locator": error.locator, "source_id": error.source_id}
                    | {"chunks": 0, "status": "error", "updated_at": error.at, "error": error.message}
                )
    start = page * DOCUMENTS_PER_PAGE
    return rows[start : start + DOCUMENTS_PER_PAGE], len(rows)


@router.get("/kbs/{slug}/documents")
def documents(
    request: Request, slug: str, user: AdminUserDep, q: str = "", status: str = "", page: int = 0
) -> Response:
    """The KB's documents: search by title or path, filter by status (read, error), each with its error."""
    catalog = request.app.state.catalog
    kb = kb_for_reader(catalog, user.principal, slug)
    if status not in ("", "read", "error"):
        raise InvalidInput(f"status must be 'read' or 'error', not {status!r}")
    query, page = q.strip()[:200], max(0, min(page, 10_000))
    rows, matched = _documents(catalog, kb, query, status, user.principal.audience, page)
    manager = user.principal.can_manage(kb)
    if not manager:  # an error can name folders, hosts and credentials
        rows = [row | {"error": "could not be read" if row["error"] else None} for row in rows]
    return render(
        request,
        "kb_documents.html.j2",
        user,
        kb=kb,
        rows=rows,
        matched=matched,
        query=query,
        status_filter=status,
        page=page,
        per_page=DOCUMENTS_PER_PAGE,
    )

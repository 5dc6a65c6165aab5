"""Pages for anyone who may read a KB: one of its documents (where chat answers link) and its report."""

from __future__ import annotations

import json
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select

from kadapt.access import kb_for_reader
from kadapt.catalog import Document
from kadapt.errors import NotFound
from kadapt.kbs import latest_decision
from kadapt.readers import may_read, stored_readers
from kadapt.report import render_report, report_data
from kadapt.web.render import PREFIX, REPORT_CSP, PageRoute, render
from kadapt.web.session import UserDep

router = APIRouter(route_class=PageRoute)


@router.get("/kbs/{slug}/documents/{document_id}")
def document(request: Request, slug: str, document_id: str, user: UserDep) -> Response:
    """A document as kadapt last read it: title, locator, source and text."""
    catalog = request.app.state.catalog
    kb = kb_for_reader(catalog, user.principal, slug)
    with catalog.session() as session:
        row = session.scalar(select(Document).where(Document.id == document_id, Document.kb_id == kb.id))
    if row is None or not may_read(stored_readers(row.meta), user.principal.audience):
        raise NotFound(f"KB {slug!r} has no document {document_id!r}")  # one the reader may not see is not there
    link = row.locator if row.locator.startswith(("https://", "http://")) else None
    markdown = row.locator.lower().endswith((".md", ".markdown")) or (row.meta or {}).get("format") == "markdown"
    return render(request, "document.html.j2", user, kb=kb, document=row, link=link, markdown=markdown)


def _hidden(request: Request, kb, user) -> bool:
    """Whether the KB holds a document this user may not read (its report then shows no sample answers)."""
    return request.app.state.store().hides_from(kb, user.principal.audience)


def _back(user, slug: str) -> str:
    return f"{PREFIX}/kbs/{slug}" if user.principal.can_administer else f"{PREFIX}/chat?kb={slug}"


@router.get("/kbs/{slug}/report")
def report(request: Request, slug: str, user: UserDep) -> Response:
    """The KB's cost/generalization report, or a page saying that it has no decision yet."""
    catalog = request.app.state.catalog
    kb = kb_for_reader(catalog, user.principal, slug)
    if latest_decision(catalog, slug) is None:
        return render(request, "no_report.html.j2", user, kb=kb, back=_back(user, slug))
    data = report_data(catalog, slug, hide_samples=_hidden(request, kb, user))
    html = render_report(data, json_href=f"{PREFIX}/kbs/{slug}/report.json")
    # the report is a standalone page; give it a way back into the console
    back = f'<nav class="meta"><a href="{escape(_back(user, slug))}">&larr; Back to the console</a></nav>'
    html = html.replace("<main>", "<main>\n" + back, 1)
    return HTMLResponse(html, headers={"content-security-policy": REPORT_CSP})


@router.get("/kbs/{slug}/report.json")
def report_json(request: Request, slug: str, user: UserDep) -> Response:
    """The report's data (the same as ``GET /v1/kbs/{kb}/report``)."""
    catalog = request.app.state.catalog
    kb = kb_for_reader(catalog, user.principal, slug)
    data = report_data(catalog, slug, hide_samples=_hidden(request, kb, user))
    return JSONResponse(json.loads(json.dumps(data, default=str)))

"""The audit log of admin actions, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from kadapt.api.deps import CatalogDep, PrincipalDep
from kadapt.audit import list_events
from kadapt.errors import PermissionDenied
from kadapt.views import AuditEventView, AuditPage

router = APIRouter(prefix="/v1/audit", tags=["audit"])


def _iso_time(value: Any) -> Any:
    """An ISO 8601 time only: pydantic would also read a number as a Unix time, which the schema does not allow."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("give an ISO 8601 time, e.g. 2026-01-31T12:00:00Z")
    return value


@router.get("")
def list_(
    catalog: CatalogDep,
    principal: PrincipalDep,
    kb: Annotated[str | None, Query(max_length=64, description="Only events on this KB.")] = None,
    actor: Annotated[
        str | None, Query(max_length=200, description="Only events by this actor ('key:3', 'cli:alice') or key name.")
    ] = None,
    since: Annotated[
        datetime | None,
        BeforeValidator(_iso_time),
        Query(description="Only events at or after this time (ISO 8601; UTC if no zone)."),
    ] = None,
    before: Annotated[
        int | None,
        # an id the catalog's INTEGER column can hold (PostgreSQL's is 32 bits): a larger one fails the query
        Query(ge=1, le=2**31 - 1, description="Only events older than this event id (the next page)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Admin and editor actions, newest first, from the API, the console and the CLI (admins only)."""
    if not principal.is_admin:
        raise PermissionDenied("only admins may read the audit log")
    events, has_more = list_events(catalog, kb=kb, actor=actor, since=since, before=before, limit=limit)
    return AuditPage(
        data=[AuditEventView.of(event) for event in events],
        has_more=has_more,
        next_before=events[-1].id if has_more else None,
    )

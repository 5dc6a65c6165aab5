"""Console page for API keys (admins only): list, create (the key is shown once, optionally with an expiry),
revoke."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from kadapt.audit import note
from kadapt.auth import ROLES, create_key, key_expired, list_keys, parse_expiry, revoke_key
from kadapt.errors import KadaptError
from kadapt.web.render import PREFIX, PageRoute, render
from kadapt.web.session import FormDep, KeyAdminDep, WebUser

router = APIRouter(route_class=PageRoute)


def _page(request: Request, user: WebUser, *, status: int = 200, **context) -> Response:
    keys = list_keys(request.app.state.catalog)
    expired = {row.id for row in keys if key_expired(row)}
    return render(request, "keys.html.j2", user, status=status, keys=keys, expired=expired, roles=ROLES, **context)


@router.get("/keys")
def keys(request: Request, user: KeyAdminDep) -> Response:
    """Every API key (never the keys themselves), with forms to create and revoke."""
    return _page(request, user)


@router.post("/keys")
def create(request: Request, user: KeyAdminDep, form: FormDep) -> Response:
    """Create a key and show it once, in this response only."""
    groups = [group.strip() for group in form.get("groups", "").split(",") if group.strip()]
    try:
        key, row = create_key(
            request.app.state.catalog,
            request.app.state.settings,
            role=form.get("role", ""),
            groups=groups,
            name=form.get("name", "").strip(),
            expires_at=parse_expiry(form.get("expires")),
        )
    except KadaptError as exc:
        return _page(request, user, status=400, error=exc.message, form=form)
    note(request, target=f"key {row.id}", detail=f"role {row.role}, groups {','.join(row.groups)}, name {row.name}")
    return _page(request, user, status=201, created={"key": key, "id": row.id, "role": row.role})


@router.post("/keys/{key_id}/revoke")
def revoke(request: Request, key_id: int, user: KeyAdminDep, form: FormDep) -> Response:
    """Revoke a key: it stops working at once, in the API and in console sessions."""
    revoke_key(request.app.state.catalog, key_id)
    return RedirectResponse(f"{PREFIX}/keys", status_code=303)

"""Signing in to the console with an API key (or, through kadapt.web.oidc, a company account), and out again."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kadapt.auth import AuthError, KeyExpired, authenticate_client, client_address
from kadapt.throttle import TooManyAuthFailures
from kadapt.web.oidc import sign_in_choice
from kadapt.web.render import PREFIX, PageRoute, render, safe_next
from kadapt.web.session import (
    checked_form,
    clear_cookie,
    current_session,
    new_session,
    revoke_session,
    set_cookie,
)

router = APIRouter(route_class=PageRoute)


def _home(principal) -> str:
    return f"{PREFIX}/" if principal.can_administer else f"{PREFIX}/chat"


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form; it starts a session that is not signed in yet, so the form has a CSRF token."""
    settings = request.app.state.settings
    session = current_session(request)
    if session is not None and session.signed_in:
        return RedirectResponse(safe_next(next, f"{PREFIX}/"), status_code=303)
    fresh = session is None
    session = session or new_session(settings)
    response = render(
        request,
        "login.html.j2",
        csrf=session.csrf,
        next=next or "",
        auth_disabled=settings.auth_disabled,
        oidc_label=sign_in_choice(settings),
    )
    if fresh:
        set_cookie(response, request, settings, session)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the key; on success replace the session with a signed-in one (and a new CSRF token)."""
    settings = request.app.state.settings
    form = await checked_form(request)
    session = current_session(request)
    key = form.get("api_key", "").strip()
    try:
        principal = await run_in_threadpool(
            authenticate_client,
            request.app.state.catalog,
            settings,
            request.app.state.auth_throttle,
            key,
            client=client_address(request),
            via="console",
        )
    except (AuthError, TooManyAuthFailures) as exc:
        status, message = 401, "That API key is not valid, or it was revoked. Check it and try again."
        if isinstance(exc, KeyExpired):
            message = "That API key has expired; ask an admin for a new one."
        if isinstance(exc, TooManyAuthFailures):
            status, message = 429, f"Too many failed sign-ins from your address; try again in {exc.retry_after} s."
        elif not key:
            message = "Enter your API key (it starts with kad_)."
        response = render(
            request,
            "login.html.j2",
            status=status,
            csrf=session.csrf,
            next=form.get("next", ""),
            error=message,
            auth_disabled=settings.auth_disabled,
            oidc_label=sign_in_choice(settings),
        )
        response.headers.update(getattr(exc, "headers", None) or {})
        return response
    request.state.principal = principal  # the audit log's actor
    signed_in = new_session(
        settings,
        key_id=principal.key_id,
        key_prefix=key.split("_")[1] if principal.key_id is not None else None,
        signed_in=True,
    )
    response = RedirectResponse(safe_next(form.get("next"), _home(principal)), status_code=303)
    set_cookie(response, request, settings, signed_in)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Sign out: the session is refused from now on (a copy of its cookie too), and the cookie is deleted."""
    await checked_form(request)
    session = current_session(request)
    if session is not None and session.signed_in:
        await run_in_threadpool(revoke_session, request.app.state.catalog, session)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    clear_cookie(response)
    return response

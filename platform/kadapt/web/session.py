"""Web console sessions: a signed cookie naming the API key that signed in, and a CSRF token.

The cookie holds the key's id and public prefix, a random CSRF token and an expiry, signed with
HMAC-SHA256 under a key derived from the server secret (``KADAPT_SECRET_KEY`` or ``<data dir>/secret.key``).
Nothing in it is secret, but it cannot be forged or extended. Every request re-reads the key's row, so a
revoked or expired key signs its sessions out at once.

Each session also carries a random id. Signing out records a hash of it (table ``revoked_sessions``) until the
session would have expired, so a copy of the cookie taken before sign-out is refused afterwards; expired rows
are pruned at each sign-out. The cookie is ``Secure`` per ``KADAPT_SECURE_COOKIES``: ``auto`` when the request
came over https (behind a TLS-terminating proxy listed in ``KADAPT_TRUSTED_PROXIES``, as its
``X-Forwarded-Proto`` says), ``always`` or ``never``.

A visitor of the sign-in page gets a session that is not signed in yet, so the sign-in form is protected
like every other form: each POST carries the session's token (a hidden ``csrf_token`` field, or the
``X-CSRF-Token`` header from scripts) and is refused with 403 without it. Signing in issues a new token.
Cookie authentication applies to ``/ui`` only; the JSON API keeps requiring API keys.

A session may instead speak for a user signed in through the company's identity provider (``kadapt.web.oidc``):
it then carries their subject, name, role and groups as the provider's groups gave them at sign-in, and lasts
``KADAPT_SESSION_HOURS`` like any other; turning company sign-in off (or pointing it at another issuer) ends
such sessions, and so does changing its client, roles, group map or groups claim (each session carries a digest
of them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Request, Response
from sqlalchemy import delete, select

from kadapt.auth import ANONYMOUS_ADMIN, Principal, key_expired, server_secret
from kadapt.catalog import ApiKey, Catalog, utcnow
from kadapt.catalog.models import RevokedSession
from kadapt.errors import InvalidInput, KadaptError, PermissionDenied
from kadapt.settings import Settings

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "AdminUserDep",
    "FormDep",
    "KeyAdminDep",
    "SignInRequired",
    "UserDep",
    "WebSession",
    "WebUser",
    "check_csrf",
    "checked_form",
    "clear_cookie",
    "company_sign_in_config",
    "current_session",
    "decode_session",
    "encode_session",
    "is_revoked",
    "new_session",
    "read_form",
    "revoke_session",
    "set_cookie",
    "sign",
    "signing_key",
    "unsign",
]

COOKIE = "kadapt_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
MAX_FORM_BYTES = 1_000_000
FORM_TYPE = "application/x-www-form-urlencoded"


class SignInRequired(KadaptError):
    status_code = 401
    code = "sign_in_required"


@dataclass(frozen=True)
class WebSession:
    csrf: str
    expires: int  # unix seconds
    signed_in: bool = False
    key_id: int | None = None  # None while signed in means "auth disabled": everyone is an admin
    key_prefix: str | None = None
    session_id: str = field(default_factory=lambda: secrets.token_urlsafe(16))  # what sign-out revokes
    # a user signed in through the company identity provider (kadapt.web.oidc): who, and the role and groups their
    # groups at the provider gave them at sign-in (a new sign-in reads them again)
    subject: str | None = None
    name: str | None = None
    role: str | None = None
    groups: tuple[str, ...] = ()
    oidc_config: str | None = None  # company_sign_in_config() at sign-in: a changed mapping signs such users out


@dataclass(frozen=True)
class WebUser:
    principal: Principal
    session: WebSession

    @property
    def csrf(self) -> str:
        return self.session.csrf


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key(settings: Settings) -> bytes:
    # derived, so a session signature can never double as an API key hash (both use the server secret)
    return hmac.new(server_secret(settings), b"kadapt web session v1", hashlib.sha256).digest()


def new_session(
    settings: Settings, *, key_id: int | None = None, key_prefix: str | None = None, signed_in: bool = False
) -> WebSession:
    """A fresh session with a new CSRF token, valid for ``KADAPT_SESSION_HOURS``."""
    return WebSession(
        csrf=secrets.token_urlsafe(32),
        expires=int(time.time() + settings.session_hours * 3600),
        signed_in=signed_in,
        key_id=key_id,
        key_prefix=key_prefix,
    )


def sign(key: bytes, values: dict) -> str:
    """``values`` as JSON, base64url, then ``.`` and its HMAC-SHA256 under ``key``: readable, never forgeable."""
    payload = _b64(json.dumps(values, separators=(",", ":")).encode())
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def unsign(key: bytes, value: str | None) -> dict | None:
    """The values :func:`sign` wrote into ``value``; None when it is missing, malformed or tampered with."""
    if not value or value.count(".") != 1:
        return None
    payload, signature = value.split(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        values = json.loads(_unb64(payload))
    except ValueError:
        return None
    return values if isinstance(values, dict) else None


def encode_session(settings: Settings, session: WebSession) -> str:
    return sign(signing_key(settings), asdict(session))


def decode_session(settings: Settings, value: str | None, catalog: Catalog | None = None) -> WebSession | None:
    """The session in a cookie value; None when it is missing, tampered with, expired, or (given the catalog)
    signed out."""
    fields = unsign(signing_key(settings), value)
    if fields is None or "session_id" not in fields:  # without an id (signed before ids) it could never sign out
        return None
    try:
        session = WebSession(**fields | {"groups": tuple(fields.get("groups") or ())})
    except TypeError:
        return None
    if session.expires <= time.time():
        return None
    if catalog is not None and session.signed_in and is_revoked(catalog, session):
        return None
    return session


def _token_hash(session: WebSession) -> str:
    return hashlib.sha256(session.session_id.encode()).hexdigest()


def is_revoked(catalog: Catalog, session: WebSession) -> bool:
    with catalog.session() as db:
        return db.get(RevokedSession, _token_hash(session)) is not None


def revoke_session(catalog: Catalog, session: WebSession) -> None:
    """Refuse ``session`` from now until it would have expired; drop the records of sessions expired since."""
    expires_at = datetime.fromtimestamp(session.expires, UTC)
    with catalog.session() as db:
        db.execute(delete(RevokedSession).where(RevokedSession.expires_at < utcnow()))
        if db.get(RevokedSession, _token_hash(session)) is None:
            db.add(RevokedSession(token_hash=_token_hash(session), expires_at=expires_at))


def _secure(request: Request, settings: Settings) -> bool:
    if settings.secure_cookies == "auto":
        return request.url.scheme == "https"
    return settings.secure_cookies == "always"


def set_cookie(response: Response, request: Request, settings: Settings, session: WebSession) -> None:
    response.set_cookie(
        COOKIE,
        encode_session(settings, session),
        max_age=max(0, session.expires - int(time.time())),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request, settings),
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def current_session(request: Request) -> WebSession | None:
    return decode_session(request.app.state.settings, request.cookies.get(COOKIE), request.app.state.catalog)


def _principal(catalog: Catalog, settings: Settings, session: WebSession) -> Principal | None:
    """The principal a session speaks for, re-checked against the key's row (revoked and expired keys are out)."""
    if not session.signed_in:
        return None
    if session.subject is not None:
        if session.oidc_config is None or session.oidc_config != company_sign_in_config(settings):
            return None  # company sign-in was turned off, or its provider, client, roles or groups changed since
        return Principal(
            name=session.name or session.subject,
            role=session.role,
            groups=frozenset(session.groups),
            subject=session.subject,
        )
    if session.key_id is None:
        return ANONYMOUS_ADMIN if settings.auth_disabled else None
    with catalog.session() as db:
        row = db.scalar(select(ApiKey).where(ApiKey.id == session.key_id))
        if row is None or row.revoked_at is not None or row.prefix != session.key_prefix or key_expired(row):
            return None
        return Principal(name=row.name or f"key {row.id}", role=row.role, groups=frozenset(row.groups), key_id=row.id)


def company_sign_in_config(settings: Settings) -> str | None:
    """A digest of what a company user's role and groups were derived from (issuer, client, KADAPT_OIDC_ROLES,
    KADAPT_OIDC_GROUP_MAP, the groups claim); None while company sign-in is off."""
    if not (settings.oidc_issuer and settings.oidc_client_id):
        return None
    basis = [
        settings.oidc_issuer.rstrip("/"),
        settings.oidc_client_id,
        settings.oidc_roles,
        settings.oidc_group_map,
        settings.oidc_groups_claim,
    ]
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:32]


def _user(request: Request) -> WebUser:
    session = current_session(request)
    principal = _principal(request.app.state.catalog, request.app.state.settings, session) if session else None
    if session is None or principal is None:
        raise SignInRequired("sign in to continue")
    user = WebUser(principal, session)
    request.state.web_user = user  # error pages show the navigation of whoever was signed in
    return user


def _admin_user(user: Annotated[WebUser, Depends(_user)]) -> WebUser:
    if not user.principal.can_administer:
        raise PermissionDenied("this page is for admins and editors; your key is a reader key")
    return user


def _key_admin(user: Annotated[WebUser, Depends(_user)]) -> WebUser:
    if not user.principal.is_admin:
        raise PermissionDenied("only admins manage API keys")
    return user


UserDep = Annotated[WebUser, Depends(_user)]
AdminUserDep = Annotated[WebUser, Depends(_admin_user)]
KeyAdminDep = Annotated[WebUser, Depends(_key_admin)]


def check_csrf(session: WebSession | None, supplied: str | None) -> None:
    if session is None or not supplied or not hmac.compare_digest(session.csrf.encode(), supplied.encode()):
        raise PermissionDenied("the form's security token is missing or out of date; reload the page and try again")


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (the last value of a repeated field wins)."""
    content_type = _content_type(request)
    if content_type != FORM_TYPE:
        raise InvalidInput(f"expected a form (application/x-www-form-urlencoded), got {content_type or 'no body'!r}")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput(f"the form is {len(body)} bytes, over the limit of {MAX_FORM_BYTES}")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"unreadable form: {exc}") from None


async def checked_form(request: Request) -> dict[str, str]:
    """The request's form, once its CSRF token matched the session's (403 otherwise)."""
    if _content_type(request) != FORM_TYPE:
        check_csrf(current_session(request), None)  # not a form, so no token: refused like a forged one
    form = await read_form(request)
    check_csrf(current_session(request), form.get(CSRF_FIELD))
    return form


FormDep = Annotated[dict[str, str], Depends(checked_form)]

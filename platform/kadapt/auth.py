"""API keys and principals.

A key looks like ``kad_<prefix>_<secret>``. Only an HMAC-SHA256 of the whole key, under the server-side
secret (``KADAPT_SECRET_KEY``, or a random one kept in ``<data dir>/secret.key``), is stored; lookups go
by the public prefix and compare in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from kadapt.catalog import ApiKey, Catalog, KnowledgeBase, utcnow
from kadapt.errors import InvalidInput, KadaptError, NotFound
from kadapt.settings import Settings

if TYPE_CHECKING:
    from kadapt.throttle import AuthThrottle

__all__ = [
    "ROLES",
    "AuthError",
    "Principal",
    "authenticate",
    "authenticate_client",
    "create_key",
    "list_keys",
    "revoke_key",
    "server_secret",
]

ROLES = ("admin", "editor", "reader")


class AuthError(KadaptError):
    status_code = 401
    code = "invalid_api_key"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    groups: frozenset[str] = field(default_factory=frozenset)
    key_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_administer(self) -> bool:
        return self.role in ("admin", "editor")

    def can_read(self, kb: KnowledgeBase) -> bool:
        return self.is_admin or bool(self.groups & (set(kb.reader_groups) | set(kb.owner_groups)))

    def can_manage(self, kb: KnowledgeBase) -> bool:
        return self.is_admin or (self.role == "editor" and bool(self.groups & set(kb.owner_groups)))


ANONYMOUS_ADMIN = Principal(name="anonymous (auth disabled)", role="admin")


def server_secret(settings: Settings) -> bytes:
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        return settings.secret_key.get_secret_value().encode()
    path: Path = settings.data_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def _digest(key: str, secret: bytes) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def create_key(
    catalog: Catalog, settings: Settings, *, role: str, groups: list[str], name: str = ""
) -> tuple[str, ApiKey]:
    """Create a key; returns (the key, shown only now, and its stored row)."""
    if role not in ROLES:
        raise InvalidInput(f"invalid role {role!r}; use one of {', '.join(ROLES)}")
    prefix = secrets.token_hex(6)
    key = f"kad_{prefix}_{secrets.token_urlsafe(24)}"
    row = ApiKey(
        prefix=prefix, key_hash=_digest(key, server_secret(settings)), name=name, role=role, groups=sorted(set(groups))
    )
    with catalog.session() as session:
        session.add(row)
        session.flush()
    return key, row


def list_keys(catalog: Catalog) -> list[ApiKey]:
    with catalog.session() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(catalog: Catalog, key_id: int) -> ApiKey:
    with catalog.session() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"no API key with id {key_id}; list them with `kadapt keys list`")
        row.revoked_at = row.revoked_at or utcnow()
        return row


def authenticate(catalog: Catalog, settings: Settings, key: str | None) -> Principal:
    if settings.auth_disabled:
        return ANONYMOUS_ADMIN
    if not key:
        raise AuthError("no API key: send 'Authorization: Bearer <key>' (create one with `kadapt keys create`)")
    parts = key.split("_", 2)
    if len(parts) < 3 or parts[0] != "kad":
        raise AuthError("invalid API key")
    with catalog.session() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
        expected = row.key_hash if row is not None else "0" * 64
        valid = hmac.compare_digest(expected, _digest(key, server_secret(settings)))
        if row is None or not valid or row.revoked_at is not None:
            raise AuthError("invalid API key")
        row.last_used_at = utcnow()
        return Principal(name=row.name or f"key {row.id}", role=row.role, groups=frozenset(row.groups), key_id=row.id)


def authenticate_client(
    catalog: Catalog, settings: Settings, throttle: AuthThrottle, key: str | None, *, client: str, via: str
) -> Principal:
    """:func:`authenticate`, for a request from ``client``: refused with 429 while the client is blocked for
    failed attempts, and a wrong key counts toward that block (recorded in the audit log when it starts)."""
    if settings.auth_disabled:
        return ANONYMOUS_ADMIN
    throttle.check(client)
    try:
        return authenticate(catalog, settings, key)
    except AuthError:
        if key and throttle.failed(client):
            from kadapt.audit import record

            record(
                catalog,
                actor="anonymous",
                action="auth.blocked",
                outcome="denied",
                via=via,
                client=client,
                status=429,
                detail=f"{throttle.limit} failed API key attempts within {throttle.window_seconds} s; "
                f"blocked for the rest of that window",
            )
        raise

"""API keys and principals.

A key looks like ``kad_<prefix>_<secret>``. Only an HMAC-SHA256 of the whole key, under the server-side
secret (``KADAPT_SECRET_KEY``, or a random one kept in ``<data dir>/secret.key``), is stored; lookups go
by the public prefix and compare in constant time. A key may carry an expiry; past it, it is refused like a
revoked key, with a message that says it expired.

The generated secret is created atomically (written under a temporary name, then hard-linked to its final
name, which fails if another process got there first), so servers starting together share one secret; a
configured ``KADAPT_SECRET_KEY`` shorter than :data:`MIN_SECRET_LENGTH` characters is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
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
    "KeyExpired",
    "Principal",
    "authenticate",
    "authenticate_client",
    "client_address",
    "create_key",
    "key_expired",
    "list_keys",
    "parse_expiry",
    "revoke_key",
    "server_secret",
]

ROLES = ("admin", "editor", "reader")
MIN_SECRET_LENGTH = 32


class AuthError(KadaptError):
    status_code = 401
    code = "invalid_api_key"


class KeyExpired(AuthError):
    code = "expired_api_key"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    groups: frozenset[str] = field(default_factory=frozenset)
    key_id: int | None = None
    subject: str | None = None  # a user signed in through the company identity provider: "<issuer>|<sub>"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_administer(self) -> bool:
        return self.role in ("admin", "editor")

    @property
    def audience(self) -> frozenset[str] | None:
        """Whose documents this principal may read within a KB it may read (kadapt.readers): an admin's, every
        document (None); anyone else's, the unrestricted ones and those readable by one of its groups."""
        return None if self.is_admin else self.groups

    def can_read(self, kb: KnowledgeBase) -> bool:
        return self.is_admin or bool(self.groups & (set(kb.reader_groups) | set(kb.owner_groups)))

    def can_manage(self, kb: KnowledgeBase) -> bool:
        return self.is_admin or (self.role == "editor" and bool(self.groups & set(kb.owner_groups)))


ANONYMOUS_ADMIN = Principal(name="anonymous (auth disabled)", role="admin")


def server_secret(settings: Settings) -> bytes:
    """``KADAPT_SECRET_KEY``, or the random secret in ``<data dir>/secret.key`` (created once, atomically)."""
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        configured = settings.secret_key.get_secret_value()
        if len(configured) < MIN_SECRET_LENGTH:
            raise InvalidInput(
                f"KADAPT_SECRET_KEY is {len(configured)} characters long; it must have at least "
                f"{MIN_SECRET_LENGTH} (make one with: openssl rand -hex 32), or leave it unset to have one generated"
            )
        return configured.encode()
    path: Path = settings.data_dir / "secret.key"
    if not path.exists():
        _create_secret_file(path)
    secret = path.read_text().strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise InvalidInput(
            f"{path} holds a secret of {len(secret)} characters, under {MIN_SECRET_LENGTH}; restore it from a "
            "backup (API keys are hashed with it), or delete it to have a new one made (every key must then be "
            "created again)"
        )
    return secret.encode()


def _create_secret_file(path: Path) -> None:
    """Write a new secret under a temporary name and link it into place: the file appears whole or not at all,
    and when several processes race, the first link wins and every process reads that one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs is the secret
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _digest(key: str, secret: bytes) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; kadapt stores UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


EXPIRY_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_expiry(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """A key's expiry from ``30d`` / ``12h`` / ``2w`` (from now) or ``YYYY-MM-DD`` (the start of that day, UTC);
    None for an empty value (never expires)."""
    text = (text or "").strip()
    if not text:
        return None
    now = now or utcnow()
    duration = re.fullmatch(r"([1-9][0-9]{0,4})([hdw])", text)
    if duration:
        return now + int(duration.group(1)) * EXPIRY_UNITS[duration.group(2)]
    try:
        day = date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None
    except ValueError:
        day = None
    if day is None:
        raise InvalidInput(
            f"invalid expiry {text[:40]!r}: give a duration such as 30d, 12h or 2w, or a date as YYYY-MM-DD"
        )
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if moment <= now:
        raise InvalidInput(f"the expiry {text} is not in the future; give a later date")
    return moment


def key_expired(row: ApiKey, now: datetime | None = None) -> bool:
    return row.expires_at is not None and _aware(row.expires_at) <= (now or utcnow())


def create_key(
    catalog: Catalog,
    settings: Settings,
    *,
    role: str,
    groups: list[str],
    name: str = "",
    expires_at: datetime | None = None,
) -> tuple[str, ApiKey]:
    """Create a key; returns (the key, shown only now, and its stored row). ``expires_at``: None never expires."""
    if role not in ROLES:
        raise InvalidInput(f"invalid role {role!r}; use one of {', '.join(ROLES)}")
    if expires_at is not None and _aware(expires_at) <= utcnow():
        raise InvalidInput(f"the expiry {expires_at.isoformat()} is in the past; give a future date or none")
    prefix = secrets.token_hex(6)
    key = f"kad_{prefix}_{secrets.token_urlsafe(24)}"
    row = ApiKey(
        prefix=prefix,
        key_hash=_digest(key, server_secret(settings)),
        name=name,
        role=role,
        groups=sorted(set(groups)),
        expires_at=_aware(expires_at) if expires_at is not None else None,
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
        if key_expired(row):
            raise KeyExpired(
                f"API key {row.id} expired at {_aware(row.expires_at).isoformat(timespec='seconds')}; "
                "ask an admin for a new one (`kadapt keys create`)"
            )
        row.last_used_at = utcnow()
        return Principal(name=row.name or f"key {row.id}", role=row.role, groups=frozenset(row.groups), key_id=row.id)


def authenticate_client(
    catalog: Catalog, settings: Settings, throttle: AuthThrottle, key: str | None, *, client: str, via: str
) -> Principal:
    """:func:`authenticate`, for a request from ``client``. The key is checked first and a valid one always gets
    in; a wrong one counts toward the failure throttle (per client and key prefix, and per client), and while
    the client is over a limit it is answered 429 instead of 401 (the audit log records when a block starts)."""
    from kadapt.throttle import key_prefix

    if settings.auth_disabled:
        return ANONYMOUS_ADMIN
    try:
        return authenticate(catalog, settings, key)
    except KeyExpired:  # its right secret was given: no guess, so not counted (and it always hears why)
        raise
    except AuthError:
        if not key:  # no key at all guesses nothing: not counted
            raise
        prefix = key_prefix(key)
        blocked = throttle.blocked(client, prefix)
        if blocked is not None:
            raise blocked from None
        if throttle.failed(client, prefix):
            from kadapt.audit import record

            record(
                catalog,
                actor="anonymous",
                action="auth.blocked",
                outcome="denied",
                via=via,
                client=client,
                status=429,
                detail=f"failed API key attempts over the limit ({throttle.limit} with key prefix {prefix}, or "
                f"{throttle.address_limit} in all, within {throttle.window_seconds} s); wrong keys get 429 for the "
                "rest of that window, valid keys still get in",
            )
        raise


def client_address(request) -> str:
    """The caller's address: the socket peer, or what a proxy listed in KADAPT_TRUSTED_PROXIES forwarded."""
    return request.client.host if request.client else ""

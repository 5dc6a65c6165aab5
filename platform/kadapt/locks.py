"""Named locks in the catalog (table ``catalog_locks``), shared by every process that shares the catalog.

A lock is a lease: its holder renews it while it works (:func:`held` does so from a background thread), and a
lock whose holder died is free once its lease has run out. Taking a lock is race-safe on SQLite and PostgreSQL
alike: a free name is taken by an INSERT (the primary key lets one of two racing inserts through), an expired
lease by an UPDATE that only matches while the lease is still expired (one of two racing updates matches).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from kadapt.catalog import Catalog, utcnow
from kadapt.catalog.models import CatalogLock

__all__ = ["LockHolder", "acquire", "held", "holder", "kb_lock", "release", "renew"]

_POLL_SECONDS = 0.1


class LockHolder(Exception):
    """The lock is held by someone else; ``owner`` names them (for a KB's lock: a job id, or a deletion)."""

    def __init__(self, name: str, owner: str) -> None:
        super().__init__(f"lock {name!r} is held by {owner!r}")
        self.name = name
        self.owner = owner


def kb_lock(kb_id: int) -> str:
    """The name of a KB's lock: one sync, source removal or deletion of the KB at a time."""
    return f"kb:{kb_id}"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=utcnow().tzinfo)


def acquire(catalog: Catalog, name: str, owner: str, lease_seconds: float) -> bool:
    """Take lock ``name`` for ``owner`` for ``lease_seconds``; True when taken (or already ``owner``'s)."""
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    try:
        with catalog.session() as session:
            session.add(CatalogLock(name=name, owner=owner, acquired_at=now, expires_at=expires))
        return True
    except IntegrityError:
        pass  # the name is taken: by this owner, by a live holder, or by one whose lease ran out
    with catalog.session() as session:
        taken = session.execute(
            update(CatalogLock)
            .where(CatalogLock.name == name, (CatalogLock.expires_at < now) | (CatalogLock.owner == owner))
            .values(owner=owner, acquired_at=now, expires_at=expires)
        )
        return taken.rowcount == 1


def renew(catalog: Catalog, name: str, owner: str, lease_seconds: float) -> bool:
    """Extend ``owner``'s lease on ``name``; False when ``owner`` no longer holds it (it expired and was taken)."""
    with catalog.session() as session:
        renewed = session.execute(
            update(CatalogLock)
            .where(CatalogLock.name == name, CatalogLock.owner == owner)
            .values(expires_at=utcnow() + timedelta(seconds=lease_seconds))
        )
        return renewed.rowcount == 1


def release(catalog: Catalog, name: str, owner: str) -> None:
    """Free ``name`` if ``owner`` holds it (a lock another owner took over is left to them)."""
    with catalog.session() as session:
        session.execute(delete(CatalogLock).where(CatalogLock.name == name, CatalogLock.owner == owner))


def holder(catalog: Catalog, name: str) -> str | None:
    """The owner of ``name`` while its lease runs; None when it is free."""
    with catalog.session() as session:
        row = session.scalar(select(CatalogLock).where(CatalogLock.name == name))
        if row is None or _aware(row.expires_at) < utcnow():
            return None
        return row.owner


class _Renewer:
    """Renews a lease from a daemon thread, every third of the lease, until stopped."""

    def __init__(self, catalog: Catalog, name: str, owner: str, lease_seconds: float) -> None:
        self.args = (catalog, name, owner, lease_seconds)
        self.lost = threading.Event()  # the lease ran out and another owner took it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kadapt-lock-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.args[3] / 3):
            try:
                if not renew(*self.args):
                    self.lost.set()
                    return
            except Exception:  # a busy catalog: the next renewal tries again, well within the lease
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def held(
    catalog: Catalog, name: str, owner: str, lease_seconds: float, *, wait_seconds: float = 0.0
) -> Iterator[threading.Event]:
    """Hold lock ``name`` for the block, renewing its lease meanwhile; released at the end.

    Waits up to ``wait_seconds`` for a holder to release it, then raises :class:`LockHolder` naming the holder.
    Yields an event that is set if the lease was lost (the catalog was unreachable for a whole lease)."""
    deadline = time.monotonic() + wait_seconds
    while not acquire(catalog, name, owner, lease_seconds):
        if time.monotonic() >= deadline:
            raise LockHolder(name, holder(catalog, name) or "another process")
        time.sleep(_POLL_SECONDS)
    renewer = _Renewer(catalog, name, owner, lease_seconds)
    try:
        yield renewer.lost
    finally:
        renewer.stop()
        release(catalog, name, owner)

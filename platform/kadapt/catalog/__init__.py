"""The catalog: kadapt's SQL database (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from kadapt.catalog.models import (
    Adapter,
    ApiKey,
    Augmentation,
    AugmentationUnit,
    Base,
    Conversation,
    Decision,
    Document,
    DocumentError,
    Evaluation,
    Job,
    KnowledgeBase,
    Probe,
    ProbeAnswer,
    ProbeUnit,
    Snapshot,
    SnapshotDocument,
    Source,
    utc,
    utcnow,
)
from kadapt.errors import ConfigError
from kadapt.settings import mask_url

__all__ = [
    "Adapter",
    "ApiKey",
    "Augmentation",
    "AugmentationUnit",
    "Base",
    "Catalog",
    "Conversation",
    "Decision",
    "Document",
    "DocumentError",
    "Evaluation",
    "Job",
    "KnowledgeBase",
    "Probe",
    "ProbeAnswer",
    "ProbeUnit",
    "Snapshot",
    "SnapshotDocument",
    "Source",
    "close_catalogs",
    "open_catalog",
    "sqlite_pragmas",
    "utc",
    "utcnow",
]


def sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {key: _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_without_nul(item) for item in value)
    return value


def _postgres_text(_conn, _cursor, statement: str, parameters: Any, _context, _executemany: bool):
    """PostgreSQL's text columns cannot hold NUL (SQLite's can): a NUL in any text written or looked up (a
    document, a title, a filter sent to the API) becomes U+FFFD instead of failing the statement."""
    return statement, _without_nul(parameters)


class Catalog:
    """An engine and session factory for one catalog URL, migrated to the latest schema on open."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        except ModuleNotFoundError as exc:  # the URL names a driver that is not installed
            hint = " (pip install 'kadapt[postgres]')" if "psycopg" in str(exc) else ""
            raise ConfigError(f"the catalog URL {mask_url(url)} needs {exc.name!r}{hint}") from exc
        except ArgumentError as exc:
            raise ConfigError(f"KADAPT_CATALOG_URL is not a database URL: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", sqlite_pragmas)
        elif self.engine.dialect.name == "postgresql":
            event.listen(self.engine, "before_cursor_execute", _postgres_text, retval=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            from kadapt.catalog.migrate import upgrade

            try:
                upgrade(self.engine)
            except OperationalError as exc:
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                raise ConfigError(f"cannot open the catalog at {mask_url(url)}: {reason}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


_catalogs: dict[str, Catalog] = {}
_catalogs_lock = threading.Lock()


def open_catalog(settings=None) -> Catalog:
    """The catalog for the current settings (one engine per URL per process)."""
    from kadapt.settings import get_settings

    url = (settings or get_settings()).effective_catalog_url
    with _catalogs_lock:
        if url not in _catalogs:
            _catalogs[url] = Catalog(url)
        return _catalogs[url]


def close_catalogs() -> None:
    """Close every catalog :func:`open_catalog` opened in this process (their pooled connections)."""
    with _catalogs_lock:
        for catalog in _catalogs.values():
            catalog.engine.dispose()
        _catalogs.clear()

"""The catalog: kadapt's SQL database (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from kadapt.catalog.models import (
    Adapter,
    ApiKey,
    Augmentation,
    AugmentationUnit,
    Base,
    Decision,
    Document,
    DocumentError,
    Evaluation,
    Job,
    KnowledgeBase,
    Probe,
    ProbeUnit,
    Snapshot,
    SnapshotDocument,
    Source,
    utcnow,
)

__all__ = [
    "Adapter",
    "ApiKey",
    "Augmentation",
    "AugmentationUnit",
    "Base",
    "Catalog",
    "Decision",
    "Document",
    "DocumentError",
    "Evaluation",
    "Job",
    "KnowledgeBase",
    "Probe",
    "ProbeUnit",
    "Snapshot",
    "SnapshotDocument",
    "Source",
    "open_catalog",
    "utcnow",
]


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Catalog:
    """An engine and session factory for one catalog URL, migrated to the latest schema on open."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            from kadapt.catalog.migrate import upgrade

            upgrade(self.engine)

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


@functools.cache
def _open(url: str) -> Catalog:
    return Catalog(url)


def open_catalog(settings=None) -> Catalog:
    """The catalog for the current settings (one engine per URL per process)."""
    from kadapt.settings import get_settings

    settings = settings or get_settings()
    return _open(settings.effective_catalog_url)

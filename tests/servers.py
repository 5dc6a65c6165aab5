"""Databases of one test each on the PostgreSQL and Chroma servers of the scale-out run (.ci/scaleout).

Every test gets a PostgreSQL database copied from a template that the migrations built once per test
process (so each test still runs on a schema the migrations made, without paying for them 500 times), and a
Chroma database of its own on the Chroma server.
"""

from __future__ import annotations

import functools
import os
import uuid
from urllib.parse import urlparse

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

__all__ = [
    "create_chroma_database",
    "create_postgres_database",
    "database_url",
    "drop_chroma_database",
    "drop_postgres_database",
]

_TEMPLATE = f"kadapt_template_{os.getpid()}"


def database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _admin(admin_url: str):
    return create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)


@functools.cache
def _admin_engine(admin_url: str):
    return _admin(admin_url)


@functools.cache
def _template(admin_url: str) -> str:
    """Create the migrated template database once per test process."""
    from kadapt.catalog import Catalog

    with _admin_engine(admin_url).connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{_TEMPLATE}"'))
        connection.execute(text(f"CREATE DATABASE \"{_TEMPLATE}\" TEMPLATE template0 ENCODING 'UTF8'"))
    catalog = Catalog(database_url(admin_url, _TEMPLATE))
    catalog.engine.dispose()
    return _TEMPLATE


def create_postgres_database(admin_url: str, template: str | None = None) -> str:
    """A new database, migrated (copied from the template) unless ``template`` names another one."""
    template = template or _template(admin_url)
    name = f"kt_{uuid.uuid4().hex[:16]}"
    with _admin_engine(admin_url).connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    return name


def drop_postgres_database(admin_url: str, name: str) -> None:
    # FORCE ends the sessions a test left open (a server subprocess that was killed, a pool not yet closed)
    with _admin_engine(admin_url).connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@functools.cache
def _chroma_admin(url: str):
    import chromadb
    from chromadb.config import Settings

    parsed = urlparse(url)
    return chromadb.AdminClient(
        Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host=parsed.hostname,
            chroma_server_http_port=parsed.port,
            anonymized_telemetry=False,
        )
    )


# The Chroma server keeps its databases in SQLite: while one test process drops a database (a long write), another
# creating or dropping one gets "database is locked" (a 500); such a call is tried again, up to 6 times in ~6 s.
_retry_when_locked = retry(
    retry=retry_if_exception(lambda error: "database is locked" in str(error)),
    stop=stop_after_attempt(6),
    wait=wait_exponential(multiplier=0.2, max=3),
    reraise=True,
)


@_retry_when_locked
def create_chroma_database(url: str) -> str:
    name = f"kt_{uuid.uuid4().hex[:16]}"
    _chroma_admin(url).create_database(name)
    return name


@_retry_when_locked
def drop_chroma_database(url: str, name: str) -> None:
    _chroma_admin(url).delete_database(name)

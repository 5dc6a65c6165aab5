"""The catalog schema: Alembic migrations create it and match the SQLAlchemy models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from kadapt.catalog import Base, Catalog
from kadapt.catalog.migrate import current_revision, upgrade


def test_migrations_build_the_schema_the_models_describe(empty_catalog_url):
    catalog = Catalog(empty_catalog_url)
    tables = set(inspect(catalog.engine).get_table_names())
    assert {"knowledge_bases", "sources", "documents", "document_errors", "snapshots", "jobs"} <= tables
    with catalog.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"models and migrations differ; write a migration: {diff}"
    catalog.engine.dispose()


def test_upgrade_is_idempotent(empty_catalog_url):
    engine = create_engine(empty_catalog_url)
    upgrade(engine)
    revision = current_revision(engine)
    upgrade(engine)
    assert revision is not None and current_revision(engine) == revision
    engine.dispose()


def test_deleting_a_kb_cascades(catalog):
    from sqlalchemy import func, select

    from kadapt.catalog import Job, KnowledgeBase, Source

    with catalog.session() as session:
        kb = KnowledgeBase(slug="x")
        session.add(kb)
        session.flush()
        session.add(Source(kb_id=kb.id, kind="files", config={}))
        session.add(Job(id="j1", kind="sync", kb_id=kb.id))
    with catalog.session() as session:
        session.delete(session.scalar(select(KnowledgeBase)))
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Source)) == 0
        assert session.scalar(select(func.count()).select_from(Job)) == 0

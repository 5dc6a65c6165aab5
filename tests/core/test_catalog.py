"""The catalog schema: Alembic migrations create it and match the SQLAlchemy models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Integer, create_engine, inspect

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


def test_ids_of_deleted_rows_are_never_given_out_again(catalog):
    """A folder or collection named by a KB's or source's id can never be inherited by a later row."""
    from sqlalchemy import delete, select

    from kadapt.catalog import KnowledgeBase, Source

    ids = []
    for round_ in range(2):
        with catalog.session() as session:
            kb = KnowledgeBase(slug=f"kb{round_}")
            session.add(kb)
            session.flush()
            source = Source(kb_id=kb.id, kind="files", config={})
            session.add(source)
            session.flush()
            ids.append((kb.id, source.id))
        with catalog.session() as session:  # the newest rows go: SQLite without AUTOINCREMENT reuses max(id)+1
            session.execute(delete(KnowledgeBase).where(KnowledgeBase.id == kb.id))
    assert ids[0][0] != ids[1][0] and ids[0][1] != ids[1][1], ids
    with catalog.session() as session:
        assert session.scalars(select(Source)).all() == []


def test_every_integer_keyed_table_never_reuses_ids_on_sqlite(empty_catalog_url):
    catalog = Catalog(empty_catalog_url)
    if catalog.engine.dialect.name != "sqlite":  # PostgreSQL sequences never give a value out twice
        catalog.engine.dispose()
        return
    integer_keyed = [
        table.name
        for table in Base.metadata.sorted_tables
        if len(table.primary_key.columns) == 1 and isinstance(next(iter(table.primary_key.columns)).type, Integer)
    ]
    with catalog.engine.connect() as connection:
        ddl = dict(connection.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").all())
    assert {"knowledge_bases", "sources", "snapshots", "api_keys"} <= set(integer_keyed)
    missing = [name for name in integer_keyed if "AUTOINCREMENT" not in ddl[name]]
    assert missing == [], f"tables that would reuse a deleted row's id: {missing}"
    catalog.engine.dispose()


def test_migrating_an_existing_sqlite_catalog_keeps_its_rows_and_references(tmp_path):
    """0007 rebuilds tables on SQLite: the rows, and the rows that reference them, must all survive."""
    from sqlalchemy import event, text

    from kadapt.catalog import sqlite_pragmas

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    event.listen(engine, "connect", sqlite_pragmas)
    upgrade(engine, "0006")
    stamp = "'2026-01-01 00:00:00'"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO knowledge_bases (id, slug, title, base_model, policy, workload, reader_groups, "
                f"owner_groups, active_mode, created_at, updated_at) VALUES (7, 'kb', '', 'm', 'p', '{{}}', '[]', "
                f"'[]', 'icl', {stamp}, {stamp})"
            )
        )
        connection.execute(
            text(
                "INSERT INTO sources (id, kb_id, kind, config, state, created_at) "
                f"VALUES (3, 7, 'files', '{{}}', '{{}}', {stamp})"
            )
        )
        connection.execute(
            text(f"INSERT INTO snapshots (id, kb_id, hash, document_count, created_at) VALUES (5, 7, 'h', 0, {stamp})")
        )
    upgrade(engine)
    with engine.begin() as connection:
        assert connection.execute(text("SELECT id, kb_id FROM sources")).all() == [(3, 7)]
        assert connection.execute(text("SELECT id, text_chars FROM snapshots")).all() == [(5, None)]
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # on again after the rebuild
        connection.execute(text("DELETE FROM knowledge_bases WHERE id = 7"))
        assert connection.execute(text("SELECT count(*) FROM sources")).scalar() == 0  # cascades still hold
    engine.dispose()


def _filled(table, **values):
    """``values`` plus a plain value for every other required column of a reflected ``table``."""
    from datetime import UTC, datetime

    from sqlalchemy import JSON, Boolean, DateTime

    for column in table.columns:
        if column.name in values or column.nullable or column.server_default is not None or column.primary_key:
            continue
        kind = column.type
        values[column.name] = (
            1
            if isinstance(kind, Integer)
            else datetime.now(UTC)
            if isinstance(kind, DateTime)
            else []
            if isinstance(kind, JSON)
            else False
            if isinstance(kind, Boolean)
            else "x"
        )
    return values


def test_probes_made_before_answer_probes_are_mc_only_after_the_upgrade(empty_catalog_url):
    """A catalog from before revision 0008 keeps its probes, each without a chat form (MC-only)."""
    from sqlalchemy import MetaData, select

    engine = create_engine(empty_catalog_url)
    upgrade(engine, "0007")
    tables = MetaData()
    tables.reflect(engine)
    assert "chat_question" not in tables.tables["probes"].columns
    with engine.begin() as connection:
        connection.execute(
            tables.tables["knowledge_bases"].insert().values(_filled(tables.tables["knowledge_bases"], id=1, slug="kb"))
        )
        connection.execute(
            tables.tables["snapshots"].insert().values(_filled(tables.tables["snapshots"], id=1, kb_id=1))
        )
        connection.execute(
            tables.tables["probes"]
            .insert()
            .values(
                _filled(
                    tables.tables["probes"],
                    id=1,
                    kb_id=1,
                    snapshot_id=1,
                    question="Glon are",
                    choices=["a", "b"],
                    answer_index=0,
                )
            )
        )
    upgrade(engine)
    catalog = Catalog(empty_catalog_url)
    from kadapt.catalog import Probe

    with catalog.session() as session:
        probe = session.scalar(select(Probe))
        assert (probe.question, probe.chat_question, probe.answers) == ("Glon are", None, [])
    catalog.engine.dispose()
    engine.dispose()


def test_schedules_stored_before_the_scheduler_are_due_after_the_upgrade(empty_catalog_url):
    """Before revision 0011 a source's schedule was stored unchecked and nothing ran it: after the upgrade a valid one
    is due at its next moment, and one that is not a cron expression is dropped."""
    from sqlalchemy import MetaData, select

    from kadapt.catalog import Source, utcnow
    from kadapt.catalog.models import utc

    engine = create_engine(empty_catalog_url)
    upgrade(engine, "0010")
    tables = MetaData()
    tables.reflect(engine)
    with engine.begin() as connection:
        connection.execute(
            tables.tables["knowledge_bases"].insert().values(_filled(tables.tables["knowledge_bases"], id=1, slug="kb"))
        )
        for source_id, schedule in ((1, "0 3 * * *"), (2, "every night"), (3, None)):
            row = _filled(tables.tables["sources"], id=source_id, kb_id=1, kind="files", schedule=schedule)
            connection.execute(tables.tables["sources"].insert().values(row))
    upgrade(engine)
    catalog = Catalog(empty_catalog_url)
    with catalog.session() as session:
        sources = {row.id: row for row in session.scalars(select(Source))}
        assert sources[1].schedule == "0 3 * * *" and utc(sources[1].next_sync_at) > utcnow()
        assert (utc(sources[1].next_sync_at).hour, utc(sources[1].next_sync_at).minute) == (3, 0)
        assert (sources[2].schedule, sources[2].next_sync_at) == (None, None)
        assert (sources[3].schedule, sources[3].next_sync_at) == (None, None)
    catalog.engine.dispose()
    engine.dispose()

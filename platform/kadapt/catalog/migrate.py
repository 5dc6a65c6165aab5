"""Run the catalog's Alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

__all__ = ["alembic_config", "upgrade", "current_revision"]


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "kadapt:migrations")
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


_MIGRATION_LOCK = 0x6B61_6461_706D  # PostgreSQL advisory lock key of migrations


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the catalog to ``revision``; a no-op (one cheap query) when it is already there.

    Replicas that start together migrate once: the migration runs under a lock the whole catalog shares
    (SQLite's write lock, a PostgreSQL advisory lock) and the revision is read again once it is held."""
    config = alembic_config()
    head = ScriptDirectory.from_config(config).get_current_head()
    target = head if revision == "head" else revision
    if current_revision(engine) == target:
        return
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # outside any transaction (SQLite ignores it inside one): rebuilding a table for a migration
            # must not cascade its DROP to the rows that reference it
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            if sqlite:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            if MigrationContext.configure(connection).get_current_revision() != target:
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                if sqlite:
                    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if problems:
                        raise RuntimeError(f"the migration left rows with dangling references: {problems[:5]}")
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()

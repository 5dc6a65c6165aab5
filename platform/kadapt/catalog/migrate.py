"""Run the catalog's Alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

__all__ = ["alembic_config", "upgrade", "current_revision"]


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "kadapt:migrations")
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the catalog to ``revision``; a no-op (one cheap query) when it is already there."""
    config = alembic_config()
    head = ScriptDirectory.from_config(config).get_current_head()
    if revision == "head" and current_revision(engine) == head:
        return
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

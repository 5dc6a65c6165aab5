"""Alembic environment: the connection is handed in by kadapt.catalog.migrate."""

from alembic import context

from kadapt.catalog.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
    from kadapt.catalog import open_catalog

    connection = open_catalog().engine.connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

"""freshness: when each scheduled source syncs next, adapters' parents (warm starts), removed documents' names

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 13:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN only, no batch rebuild (which would drop SQLite's AUTOINCREMENT)
    op.add_column("sources", sa.Column("next_sync_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("adapters", sa.Column("parent_id", sa.String(length=32), nullable=True))
    op.add_column("adapters", sa.Column("warm_starts", sa.Integer(), nullable=False, server_default="0"))
    # a snapshot's documents keep their names, so that what a newer snapshot removed can still be named
    op.add_column("snapshot_documents", sa.Column("locator", sa.String(length=2000), nullable=True))
    op.add_column("snapshot_documents", sa.Column("title", sa.String(length=500), nullable=True))
    _schedule_existing_sources()


def _schedule_existing_sources() -> None:
    """Schedules were stored before anything ran them, and unchecked: a valid one is due at its next moment from
    now; one that is not a cron expression kadapt accepts is dropped (the source syncs when asked, as before)."""
    from datetime import UTC, datetime

    from kadapt.errors import InvalidInput
    from kadapt.schedules import check_schedule, next_sync

    bind = op.get_bind()
    sources = sa.table(
        "sources",
        sa.column("id", sa.Integer),
        sa.column("schedule", sa.String),
        sa.column("next_sync_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    for row in bind.execute(sa.select(sources.c.id, sources.c.schedule).where(sources.c.schedule.is_not(None))).all():
        try:
            schedule = check_schedule(row.schedule)
        except InvalidInput:
            schedule = None
        bind.execute(
            sources.update()
            .where(sources.c.id == row.id)
            .values(schedule=schedule, next_sync_at=next_sync(schedule, now) if schedule else None)
        )


def downgrade() -> None:
    for table, column in (
        ("snapshot_documents", "title"),
        ("snapshot_documents", "locator"),
        ("adapters", "warm_starts"),
        ("adapters", "parent_id"),
        ("sources", "next_sync_at"),
    ):
        with op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.drop_column(column)

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

"""icl contrast: the context-aware decoding weight a KB's icl answers are served with, chosen by its pilot

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 03:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN, not a batch rebuild (which would drop SQLite's AUTOINCREMENT); 0: plain decoding until measured
    op.add_column("knowledge_bases", sa.Column("icl_contrast", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("knowledge_bases", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("icl_contrast")

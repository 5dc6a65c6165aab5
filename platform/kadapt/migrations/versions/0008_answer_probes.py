"""answer probes: a chat form (a natural question and its accepted answers) beside each multiple-choice probe

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 10:00:00

Probes made before this revision have no chat form (they are MC-only): their chat question is NULL and
their accepted answers an empty list.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ALTER TABLE ... ADD COLUMN: a batch operation would rebuild the SQLite table without AUTOINCREMENT
    op.add_column("probes", sa.Column("chat_question", sa.Text(), nullable=True))
    op.add_column("probes", sa.Column("answers", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))


def downgrade() -> None:
    with op.batch_alter_table("probes", table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_column("answers")
        batch_op.drop_column("chat_question")

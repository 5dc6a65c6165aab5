"""probe answers: served answers to answer probes, with the judge's verdicts

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-12 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a new table, so no batch operation rebuilds an existing one (which would drop SQLite's AUTOINCREMENT)
    op.create_table(
        "probe_answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kb_id", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("probe_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("adapter_id", sa.String(length=32), nullable=True),
        sa.Column("served_as", sa.String(length=32), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("f1", sa.Float(), nullable=False),
        sa.Column("judge", sa.String(length=64), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["kb_id"], ["knowledge_bases.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["snapshot_id"], ["snapshots.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["probe_id"], ["probes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_probe_answers_kb_run", "probe_answers", ["kb_id", "run_id"], unique=False)
    op.create_index(op.f("ix_probe_answers_snapshot_id"), "probe_answers", ["snapshot_id"], unique=False)
    op.create_index(op.f("ix_probe_answers_probe_id"), "probe_answers", ["probe_id"], unique=False)


def downgrade() -> None:
    op.drop_table("probe_answers")

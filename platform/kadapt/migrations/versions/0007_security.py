"""ids never reused, job owners, snapshot text totals, key expiry, catalog locks, revoked sessions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:40:00

On SQLite, every table with an integer key is rebuilt with AUTOINCREMENT, so that the id of a deleted row
(a KB, a source) is never given to a new one: folders and collections named by id cannot be inherited.
PostgreSQL sequences never hand an id out twice already.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# parents before children, so that each rebuilt table's foreign keys name a table that exists
_INTEGER_KEYED = (
    "knowledge_bases",
    "sources",
    "document_errors",
    "snapshots",
    "api_keys",
    "augmentations",
    "probes",
    "evaluations",
    "decisions",
    "audit_events",
)


def upgrade() -> None:
    with op.batch_alter_table("snapshots") as batch_op:
        batch_op.add_column(sa.Column("text_chars", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("token_counts", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=32), nullable=True))
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    # KBs made before now have their Chroma collection and folders named by slug; kadapt renames them to
    # id names on first use. KBs created from now on are named by id only (a new KB never inherits a slug's)
    with op.batch_alter_table("knowledge_bases") as batch_op:
        batch_op.add_column(sa.Column("legacy_slug", sa.String(length=64), nullable=True))
    op.execute("UPDATE knowledge_bases SET legacy_slug = slug")
    if op.get_bind().dialect.name == "sqlite":
        # last, so that no later batch operation rebuilds a table without it. kadapt.catalog.migrate turns
        # foreign keys off around the migration: rebuilding a parent table would cascade its DROP to its children
        for table in _INTEGER_KEYED:
            with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
                pass
    op.create_table(
        "catalog_locks",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "revoked_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("revoked_sessions") as batch_op:
        batch_op.create_index(batch_op.f("ix_revoked_sessions_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_table("revoked_sessions")
    op.drop_table("catalog_locks")
    with op.batch_alter_table("knowledge_bases") as batch_op:
        batch_op.drop_column("legacy_slug")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("owner")
    with op.batch_alter_table("snapshots") as batch_op:
        batch_op.drop_column("token_counts")
        batch_op.drop_column("text_chars")

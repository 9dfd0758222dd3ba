"""Sources the scheduler polls, and the source each article came from.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("every_seconds", sa.Integer(), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("only_mentioning", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("etag", sa.Text()),
        sa.Column("last_modified", sa.Text()),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_fetch_at", Timestamp),
        sa.Column("last_success_at", Timestamp),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("last_notes", sa.Text()),
        sa.Column("items", sa.Integer()),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("not_found", sa.Integer(), nullable=False),
        sa.Column("next_fetch_at", Timestamp, nullable=False),
        sa.Column("claimed_by", sa.String(120)),
        sa.Column("claimed_until", Timestamp),
    )
    op.create_index("ix_sources_due", "sources", ["status", "next_fetch_at"])
    # No foreign key: removing a source keeps its articles and clears their source_id.
    op.add_column("articles", sa.Column("source_id", sa.BigInteger()))
    op.create_index("ix_articles_source_id", "articles", ["source_id"])


def downgrade() -> None:
    op.drop_index("ix_articles_source_id", table_name="articles")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("source_id")
    op.drop_index("ix_sources_due", table_name="sources")
    op.drop_table("sources")

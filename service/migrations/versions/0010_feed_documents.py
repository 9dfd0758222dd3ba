"""Feed documents in the store: every replica serves the same bytes, ETag and Last-Modified.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feed_documents",
        sa.Column("path", sa.String(300), primary_key=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_feed_documents_version", "feed_documents", ["version"])
    publication = op.create_table(
        "feed_publication",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(publication, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("feed_publication")
    op.drop_index("ix_feed_documents_version", table_name="feed_documents")
    op.drop_table("feed_documents")

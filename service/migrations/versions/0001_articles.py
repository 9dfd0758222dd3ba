"""Articles, their topics and site facts.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "articles",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(500), nullable=False, unique=True),
        sa.Column("guid", sa.String(64), nullable=False, unique=True),
        sa.Column("slug", sa.String(120), nullable=False, unique=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("teaser", sa.Text(), nullable=False),
        sa.Column("body", sa.Text()),
        sa.Column("place", sa.String(200), nullable=False),
        sa.Column("published_at", Timestamp, nullable=False, index=True),
        sa.Column("image_caption", sa.Text()),
        sa.Column("image_url", sa.Text()),
        sa.Column("source_url", sa.Text()),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False, index=True),
    )
    op.create_table(
        "article_topics",
        sa.Column(
            "article_id",
            BigId,
            sa.ForeignKey("articles.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("topic", sa.String(100), primary_key=True, index=True),
    )
    op.create_table(
        "site_facts",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("site_facts")
    op.drop_table("article_topics")
    op.drop_table("articles")

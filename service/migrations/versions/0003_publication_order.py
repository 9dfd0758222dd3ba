"""The publication sequence of articles: digests follow commit order, not id order.

Existing articles are all committed, so their sequence is their id; the ledger's article
ranges, which held ids, then hold the same numbers as sequences.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("publication_seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE articles SET publication_seq = id")
    op.create_index("ix_articles_publication_seq", "articles", ["publication_seq"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_articles_publication_seq", "articles")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("publication_seq")

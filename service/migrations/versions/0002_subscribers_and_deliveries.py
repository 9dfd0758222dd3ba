"""Subscribers, their addresses, the delivery ledger, confirmation requests; the notify
flag of articles.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(
            sa.Column("notify", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.create_table(
        "subscribers",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("slug", sa.String(120), nullable=False, unique=True),
        sa.Column("ags", sa.String(8)),
        sa.Column("bundesland", sa.String(60)),
        sa.Column("partner", sa.String(200)),
        sa.Column("frequency", sa.String(10), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_table(
        "addresses",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "subscriber_id",
            BigId,
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("confirmed_at", Timestamp),
        sa.Column("unsubscribed_at", Timestamp),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "address_id",
            BigId,
            sa.ForeignKey("addresses.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("period_key", sa.String(80), nullable=False),
        sa.Column("period_start", Timestamp, nullable=False),
        sa.Column("period_end", Timestamp, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("claimed_by", sa.String(120)),
        sa.Column("claimed_until", Timestamp),
        sa.Column("after_article_id", sa.BigInteger(), nullable=False),
        sa.Column("upto_article_id", sa.BigInteger(), nullable=False),
        sa.Column("article_count", sa.Integer()),
        sa.Column("message_id", sa.String(250)),
        sa.Column("last_reply", sa.Text()),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("sent_at", Timestamp),
        sa.UniqueConstraint("address_id", "period_key"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "confirmation_requests",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False, index=True),
        sa.Column("client", sa.String(100), nullable=False, index=True),
        sa.Column("mailed", sa.Boolean(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("confirmation_requests")
    op.drop_index("ix_deliveries_due", "deliveries")
    op.drop_table("deliveries")
    op.drop_table("addresses")
    op.drop_table("subscribers")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("notify")

"""Mail outcomes: uncertain deliveries (no reply to the end of the message in time) and the
durable queue of confirmation mails.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(
            sa.Column("uncertain_attempts", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "confirmation_mails",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "address_id",
            BigId,
            sa.ForeignKey("addresses.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("uncertain_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("claimed_by", sa.String(120)),
        sa.Column("claimed_until", Timestamp),
        sa.Column("message_id", sa.String(250)),
        sa.Column("last_reply", sa.Text()),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("sent_at", Timestamp),
    )
    op.create_index(
        "ix_confirmation_mails_due", "confirmation_mails", ["status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_confirmation_mails_due", "confirmation_mails")
    op.drop_table("confirmation_mails")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("uncertain_attempts")

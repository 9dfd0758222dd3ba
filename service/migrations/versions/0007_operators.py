"""Operators who sign in to the console, and failed sign-ins for its rate limit.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("session_key", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_sign_in_at", Timestamp),
    )
    op.create_table(
        "sign_in_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("client_key", sa.String(64), nullable=False),
        sa.Column("account_key", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_sign_in_attempts_client", "sign_in_attempts", ["client_key", "created_at"])
    op.create_index(
        "ix_sign_in_attempts_account", "sign_in_attempts", ["account_key", "created_at"]
    )
    op.create_index("ix_sign_in_attempts_created_at", "sign_in_attempts", ["created_at"])


def downgrade() -> None:
    op.drop_table("sign_in_attempts")
    op.drop_table("operators")

"""Consent records (when, which form text, a keyed hash of the client, one-time link id)
and anonymous counts that outlive erased addresses.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "address_id",
            BigId,
            sa.ForeignKey("addresses.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("form_version", sa.String(40)),
        sa.Column("client_hash", sa.String(64)),
        sa.Column("nonce", sa.String(43), unique=True),
        sa.Column("issued_status", sa.String(20), nullable=False),
        sa.Column("requested_at", Timestamp, nullable=False),
        sa.Column("confirmed_at", Timestamp),
        sa.Column("confirm_client_hash", sa.String(64)),
        sa.Column("voided_at", Timestamp),
    )
    # Addresses confirmed before consents were recorded keep what is known: when.
    op.execute(
        "INSERT INTO consents (address_id, source, issued_status, requested_at, confirmed_at) "
        "SELECT id, 'before-records', status, created_at, confirmed_at FROM addresses "
        "WHERE confirmed_at IS NOT NULL"
    )
    op.create_table(
        "anonymous_counts",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("anonymous_counts")
    op.drop_table("consents")

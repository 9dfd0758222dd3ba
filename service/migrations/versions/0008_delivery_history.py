"""Delivery history: when a queued mail was last attempted, and the ledger indexed by
period for the per-period counts and listings.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)
_QUEUES = ("deliveries", "confirmation_mails")


def upgrade() -> None:
    for table in _QUEUES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("last_attempt_at", Timestamp))
    op.create_index("ix_deliveries_period", "deliveries", ["period_key", "status"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_period", "deliveries")
    for table in _QUEUES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("last_attempt_at")

"""The queue of confirmation mails: one row per mail to send, with the ledger's statuses
and retry bookkeeping; the mail itself is composed when it is sent.

Owns the table `confirmation_mails`: queueing, claiming, finishing and releasing its rows
(the mechanics shared with the ledger are in `queues`). Imports `base`, `subscribers` and
`queues`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, Index, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from service.store import queues
from service.store.base import Base
from service.store.queues import DeliveryStatus, Outcome, QueuedMail
from service.store.subscribers import Address


class ConfirmationMail(QueuedMail, Base):
    """The queue of confirmation mails: one row per mail to send, with the ledger's
    statuses and retry bookkeeping; the mail itself is composed when it is sent."""

    __tablename__ = "confirmation_mails"
    __table_args__ = (Index("ix_confirmation_mails_due", "status", "next_attempt_at"),)

    address_id: Mapped[int] = mapped_column(
        ForeignKey("addresses.id", ondelete="CASCADE"), index=True
    )


async def enqueue_confirmation(session: AsyncSession, address_id: int, now: datetime) -> bool:
    """Queue a confirmation mail for the address unless one is still waiting to be sent
    (that one is composed when sent, so it carries the newest link); True if a row was
    added. A mail already being sent was composed with an older link: it does not count."""
    waiting = await session.scalar(
        select(ConfirmationMail.id).where(
            ConfirmationMail.address_id == address_id,
            ConfirmationMail.status == DeliveryStatus.PENDING,
        )
    )
    if waiting is not None:
        return False
    session.add(
        ConfirmationMail(
            address_id=address_id,
            status=str(DeliveryStatus.PENDING),
            attempts=0,
            uncertain_attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    await session.flush()
    return True


async def claim_confirmations(
    session: AsyncSession, worker: str, now: datetime, limit: int, lease: timedelta
) -> list[int]:
    """Claim due confirmation mails, as `claim_deliveries` claims ledger rows."""
    return await queues.claim_rows(session, ConfirmationMail, worker, now, limit, lease)


async def confirmations_with_addresses(
    session: AsyncSession, ids: Sequence[int]
) -> list[tuple[ConfirmationMail, Address]]:
    return await queues.rows_with_addresses(session, ConfirmationMail, ConfirmationMail.id.in_(ids))


async def finish_confirmation(
    session: AsyncSession, mail_id: int, worker: str, outcome: Outcome, now: datetime
) -> bool:
    """Record the outcome of a claimed confirmation mail; False if the claim was lost."""
    return await queues.finish_row(session, ConfirmationMail, mail_id, worker, outcome, now)


async def release_confirmation_claims(session: AsyncSession, workers: Sequence[str]) -> int:
    return await queues.release_rows(session, ConfirmationMail, workers)

"""What the two mail queues share: the delivery ledger (`ledger`) and the confirmation
mails (`confirmation_queue`).

Owns no table: the columns both queue tables have (`QueuedMail`), their statuses, the
record of one attempt's outcome (`Outcome`), and claiming (with a lease), releasing and
finishing rows. Imports `base` and `subscribers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import ColumnElement, Integer, String, Table, Text, and_, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from service.store.base import BigId, UTCDateTime, claim_chosen
from service.store.subscribers import Address


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due, or waiting for a retry
    SENDING = "sending"  # claimed by a worker
    SENT = "sent"
    FAILED = "failed"  # permanently, or out of attempts
    EMPTY = "empty"  # nothing new for this address in this period: no mail
    SUPERSEDED = "superseded"  # a newer period's digest carries its articles
    # No reply to the end of the message in time, also after the one retry such a row
    # gets: it may have arrived (once or twice), so it is never sent again.
    UNCERTAIN = "uncertain"


class QueuedMail:
    """The columns of a queued mail: its status, retry bookkeeping, claim and reply."""

    if TYPE_CHECKING:  # each table declares its own (indexed or not)
        address_id: Mapped[int]

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts whose end got no reply in time (each may have been delivered).
    uncertain_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(250))
    last_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the row was last tried (not set by an outcome that is no attempt, such as empty).
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# What run reports count an outcome as, by the status it leaves its row in.
_LABELS = {
    DeliveryStatus.SENT: "sent",
    DeliveryStatus.PENDING: "retrying",
    DeliveryStatus.FAILED: "failed",
    DeliveryStatus.UNCERTAIN: "uncertain",
    DeliveryStatus.EMPTY: "skipped",
    DeliveryStatus.SUPERSEDED: "skipped",
}


@dataclass(frozen=True)
class Outcome:
    """The outcome of one attempt at a claimed row: the state it leaves the row in.

    Decided once (`service.outcomes`), recorded by `finish_delivery` or
    `finish_confirmation`.
    """

    status: DeliveryStatus
    reply: str | None = None
    next_attempt_at: datetime | None = None  # when a row left pending is tried again
    message_id: str | None = None
    article_count: int | None = None  # digests only
    counts_attempt: bool = True  # False for a row skipped without trying to send it
    uncertain: bool = False  # this attempt may have delivered the message
    # A refusal that counts toward marking the address bounced.
    permanent_failure: bool = False

    @property
    def label(self) -> str:
        """What run reports count it as: sent, retrying, failed, uncertain or skipped."""
        return _LABELS[self.status]


Row = TypeVar("Row", bound=QueuedMail)


async def rows_with_addresses(
    session: AsyncSession, model: type[Row], *where: ColumnElement[bool]
) -> list[tuple[Row, Address]]:
    """The rows of a queue that match `where`, each with its address, in id order."""
    rows = await session.execute(
        select(model, Address)
        .join(Address, Address.id == model.address_id)
        .where(*where)
        .order_by(model.id)
    )
    return [(row[0], row[1]) for row in rows.all()]


async def claim_rows(
    session: AsyncSession,
    model: type[QueuedMail],
    worker: str,
    now: datetime,
    limit: int,
    lease: timedelta,
) -> list[int]:
    """Claim up to `limit` due rows of a queue for `worker`: pending ones whose time has
    come, then claims whose lease ran out. Two workers never get the same row: PostgreSQL
    skips rows another transaction has locked; SQLite runs each claiming statement as one
    write.

    Each kind is claimed by its own statement so that the pending ones come straight off
    the (status, next_attempt_at) index instead of a scan of the whole table.
    """
    kinds = (
        (
            and_(model.status == DeliveryStatus.PENDING, model.next_attempt_at <= now),
            model.next_attempt_at,
        ),
        (
            and_(model.status == DeliveryStatus.SENDING, model.claimed_until < now),
            model.claimed_until,
        ),
    )
    claim = {"status": DeliveryStatus.SENDING, "claimed_by": worker, "claimed_until": now + lease}
    claimed: list[int] = []
    for due, order in kinds:
        if len(claimed) >= limit:
            break
        chosen = select(model.id).where(due).order_by(order).limit(limit - len(claimed))
        claimed += await claim_chosen(session, model, chosen, due, claim)
    return sorted(claimed)


async def release_rows(
    session: AsyncSession, model: type[QueuedMail], workers: Sequence[str]
) -> int:
    """Hand rows claimed but not finished by these workers back to the queue."""
    if not workers:
        return 0
    result = await session.execute(
        update(model)
        .where(model.status == DeliveryStatus.SENDING, model.claimed_by.in_(workers))
        .values(status=DeliveryStatus.PENDING, claimed_by=None, claimed_until=None)
        .returning(model.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())


async def finish_row(
    session: AsyncSession,
    model: type[QueuedMail],
    row_id: int,
    worker: str,
    outcome: Outcome,
    now: datetime,
) -> bool:
    """Record the outcome of a claimed row; False if the claim was lost meanwhile."""
    # A Core statement on the table: once per message, the ORM's bulk-update bookkeeping
    # cost more than the statement itself.
    table = cast(Table, inspect(model).local_table)
    values: dict[str, Any] = {
        "status": str(outcome.status),
        "claimed_by": None,
        "claimed_until": None,
        "last_reply": outcome.reply,
    }
    if outcome.counts_attempt:
        values["attempts"] = table.c.attempts + 1
        values["last_attempt_at"] = now
    if outcome.uncertain:
        values["uncertain_attempts"] = table.c.uncertain_attempts + 1
    if outcome.message_id is not None:
        values["message_id"] = outcome.message_id
    if outcome.article_count is not None:
        values["article_count"] = outcome.article_count
    if outcome.status is DeliveryStatus.SENT:
        values["sent_at"] = now
    if outcome.next_attempt_at is not None:
        values["next_attempt_at"] = outcome.next_attempt_at
    result = await session.execute(
        update(table)
        .where(
            table.c.id == row_id,
            table.c.claimed_by == worker,
            table.c.status == str(DeliveryStatus.SENDING),
        )
        .values(**values)
        .returning(table.c.id)
    )
    return result.first() is not None

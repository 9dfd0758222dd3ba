"""The delivery ledger: one row per (address, digest period), the only record of what
was sent.

Owns the table `deliveries`: the digest periods, planning a period's rows (high-water
marks over publication numbers, see `articles.publish_committed`), claiming and finishing
rows (the shared mechanics are in `queues`), the ledger's counts, and the sent periods the
archive shows (`Edition`). Imports `base`, `articles`, `subscribers` and `queues`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from service.store.articles import Article, count_in_window, newest_seq, publish_committed
from service.store.base import Base, UTCDateTime
from service.store.queues import (
    DeliveryStatus,
    Outcome,
    OutcomeRecorder,
    QueuedMail,
    claim_rows,
    finish_row,
    outcome_recorder,
    release_rows,
    rows_with_addresses,
)
from service.store.subscribers import Address, AddressStatus, Frequency, Subscriber


class Delivery(QueuedMail, Base):
    """The ledger: one row per (address, digest period), the only record of what was sent."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("address_id", "period_key"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        # The history's per-period counts and listings (`history`).
        Index("ix_deliveries_period", "period_key", "status"),
    )

    address_id: Mapped[int] = mapped_column(ForeignKey("addresses.id", ondelete="CASCADE"))
    period_key: Mapped[str] = mapped_column(String(80))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    # The digest carries the articles with after_article_id < publication_seq <=
    # upto_article_id (publication sequences; the names are from when they were ids).
    after_article_id: Mapped[int] = mapped_column(BigInteger)
    upto_article_id: Mapped[int] = mapped_column(BigInteger)
    # The articles of the window the sent digest carried: listed, or beyond the digest's cap
    # counted and linked to the archive (they are not sent again either).
    article_count: Mapped[int | None] = mapped_column(Integer)


@dataclass(frozen=True)
class Period:
    """One digest period of a frequency: (start, end]; it is due from `end` on."""

    frequency: Frequency
    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        return f"{self.frequency}:{self.end.astimezone(UTC).strftime('%Y-%m-%dT%H:%MZ')}"

    @classmethod
    def of(cls, delivery: Delivery) -> Period:
        """The period a ledger row was planned for."""
        frequency = Frequency(delivery.period_key.partition(":")[0])
        return cls(frequency, delivery.period_start, delivery.period_end)


# Rows whose articles count as carried. An uncertain row may have arrived twice already:
# a third copy of its articles in the next digest would be worse than the small chance
# that neither arrived.
_LIVE = (
    DeliveryStatus.SENT,
    DeliveryStatus.EMPTY,
    DeliveryStatus.SENDING,
    DeliveryStatus.PENDING,
    DeliveryStatus.UNCERTAIN,
)


@dataclass(frozen=True)
class _ArticleClock:
    """When articles entered the store, in publication order: answers "the newest
    publication number stored by then" with a bisection, so planning a first digest for
    many addresses stays cheap."""

    moments: list[datetime]  # ascending
    newest: list[int]  # the highest publication number stored by moments[i]

    @classmethod
    async def load(cls, session: AsyncSession) -> _ArticleClock:
        rows = await session.execute(
            select(Article.publication_seq, Article.created_at)
            .where(Article.publication_seq.is_not(None))
            .order_by(Article.publication_seq)
        )
        # An article numbered after another was committed after it, so it entered the
        # store no earlier than the other's import time: the running maximum of import
        # times keeps `moments` ascending for the bisection.
        moments: list[datetime] = []
        newest: list[int] = []
        for seq, created_at in rows.all():
            moments.append(max(created_at, moments[-1]) if moments else created_at)
            newest.append(cast(int, seq))
        return cls(moments, newest)

    def first_after(self, confirmed_at: datetime, period: Period) -> int:
        """Where an address's first digest starts: one period before its confirmation."""
        index = bisect_right(self.moments, confirmed_at - (period.end - period.start))
        return self.newest[index - 1] if index else 0


async def _high_water_marks(session: AsyncSession, address_ids: Sequence[int]) -> dict[int, int]:
    """Per address, the newest publication number a sent, empty or still live digest row
    carries."""
    rows = await session.execute(
        select(Delivery.address_id, func.max(Delivery.upto_article_id))
        .where(Delivery.address_id.in_(address_ids), Delivery.status.in_(_LIVE))
        .group_by(Delivery.address_id)
    )
    return {address_id: int(mark) for address_id, mark in rows.all()}


async def next_window(
    session: AsyncSession, address: Address, period: Period, now: datetime
) -> tuple[int, int]:
    """(after, upto): the publication numbers the address's next digest would carry, as
    `plan_period` would plan it now; for previews, writes nothing (articles not numbered
    yet are left out: `publish_committed` first to see them)."""
    upto = await newest_seq(session)
    after = (await _high_water_marks(session, [address.id])).get(address.id)
    if after is None:
        clock = await _ArticleClock.load(session)
        after = clock.first_after(address.confirmed_at or now, period)
    return after, max(after, upto)


async def count_due(session: AsyncSession, now: datetime) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        )
        or 0
    )


async def plan_period(
    session: AsyncSession, period: Period, now: datetime, batch_size: int = 1000
) -> int:
    """Add a pending ledger row for every active address of the period's frequency that
    was confirmed by the period's end and has none yet; returns how many were added.

    A row carries the articles after the address's high-water mark (the newest publication
    number an earlier live row carries) up to the newest one now; committed articles are
    numbered first (`publish_committed`). An address's first row reaches back one period
    before its confirmation. Older rows still waiting for a retry are superseded: the new
    row carries their articles too. Safe to run concurrently: the unique (address,
    period) key makes a second insert a no-op.
    """
    await publish_committed(session)
    upto = await newest_seq(session)
    clock = await _ArticleClock.load(session)
    planned_already = select(Delivery.id).where(
        Delivery.address_id == Address.id, Delivery.period_key == period.key
    )
    candidates = (
        select(Address.id, Address.confirmed_at)
        .join(Subscriber)
        .where(
            Address.status == AddressStatus.ACTIVE,
            Subscriber.frequency == str(period.frequency),
            Address.confirmed_at <= period.end,
            ~planned_already.exists(),
        )
        .order_by(Address.id)
    )
    added = 0
    last_id = 0
    while True:
        batch = (
            await session.execute(candidates.where(Address.id > last_id).limit(batch_size))
        ).all()
        if not batch:
            return added
        last_id = batch[-1][0]
        address_ids = [row[0] for row in batch]
        await session.execute(
            update(Delivery)
            .where(
                Delivery.address_id.in_(address_ids),
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.period_key != period.key,
            )
            .values(status=DeliveryStatus.SUPERSEDED, last_reply="superseded by " + period.key)
        )
        marks = await _high_water_marks(session, address_ids)
        rows = []
        for address_id, confirmed_at in batch:
            after = marks.get(address_id)
            if after is None:
                after = clock.first_after(confirmed_at or now, period)
            rows.append(
                {
                    "address_id": address_id,
                    "period_key": period.key,
                    "period_start": period.start,
                    "period_end": period.end,
                    "status": DeliveryStatus.PENDING,
                    "attempts": 0,
                    "uncertain_attempts": 0,
                    "next_attempt_at": now,
                    "after_article_id": after,
                    "upto_article_id": max(after, upto),
                    "created_at": now,
                }
            )
        added += await _insert_ignoring_conflicts(session, rows)


async def _insert_ignoring_conflicts(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    from sqlalchemy.dialects import postgresql, sqlite

    keys = ["address_id", "period_key"]
    # The table, not the mapped class: the ORM's bulk insert bookkeeping per row cost more
    # than the insert itself.
    table = cast(Table, Delivery.__table__)
    statement: Any
    if session.get_bind().dialect.name == "postgresql":
        statement = postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    else:
        statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
    result = await session.execute(statement.returning(table.c.id), rows)
    return len(result.all())


async def claim_deliveries(
    session: AsyncSession, worker: str, now: datetime, limit: int, lease: timedelta
) -> list[int]:
    """Claim up to `limit` due ledger rows for `worker` (see `queues.claim_rows`)."""
    return await claim_rows(session, Delivery, worker, now, limit, lease)


async def release_claims(session: AsyncSession, workers: Sequence[str]) -> int:
    """Hand rows claimed but not finished by these workers back to the queue."""
    return await release_rows(session, Delivery, workers)


async def claiming_workers(session: AsyncSession, prefix: str) -> list[str]:
    rows = await session.scalars(
        select(Delivery.claimed_by)
        .where(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_by.like(f"{prefix}%"))
        .distinct()
    )
    return [w for w in rows if w]


async def deliveries_with_addresses(
    session: AsyncSession, delivery_ids: Sequence[int]
) -> list[tuple[Delivery, Address]]:
    return await rows_with_addresses(session, Delivery, Delivery.id.in_(delivery_ids))


async def due_deliveries(session: AsyncSession, now: datetime) -> list[tuple[Delivery, Address]]:
    due = (Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
    return await rows_with_addresses(session, Delivery, *due)


async def finish_delivery(
    session: AsyncSession, delivery_id: int, worker: str, outcome: Outcome, now: datetime
) -> bool:
    """Record the outcome of a claimed row; False if the claim was lost meanwhile."""
    return await finish_row(session, Delivery, delivery_id, worker, outcome, now)


def delivery_recorder(
    sessions: async_sessionmaker[AsyncSession], worker: str
) -> AbstractAsyncContextManager[OutcomeRecorder]:
    """Records the outcomes of `worker`'s claimed ledger rows, one cheap durable statement
    per message (`queues.OutcomeRecorder`)."""
    return outcome_recorder(sessions, Delivery, worker)


async def deliveries_of(session: AsyncSession, address_id: int) -> Sequence[Delivery]:
    return (
        await session.scalars(
            select(Delivery).where(Delivery.address_id == address_id).order_by(Delivery.id)
        )
    ).all()


async def counts_by_status(
    session: AsyncSession, model: type[Address] | type[Delivery]
) -> dict[str, int]:
    rows = await session.execute(select(model.status, func.count()).group_by(model.status))
    return {status: int(count) for status, count in rows.all()}


def _aware(moment: datetime) -> datetime:
    # An aggregate comes back naive from SQLite: the column's type is not applied to it.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def recent_failures(
    session: AsyncSession, since: datetime, limit: int = 20
) -> list[tuple[Address, Delivery]]:
    """Addresses whose digest of a period ending since `since` failed, each with its newest
    failed row, newest first."""
    rows = await session.execute(
        select(Address, Delivery)
        .join(Address, Address.id == Delivery.address_id)
        .where(Delivery.status == DeliveryStatus.FAILED, Delivery.period_end >= since)
        .order_by(Delivery.period_end.desc(), Delivery.id.desc())
        .limit(limit * 4)
    )
    seen: dict[int, tuple[Address, Delivery]] = {}
    for address, delivery in rows.all():
        seen.setdefault(address.id, (address, delivery))
    return list(seen.values())[:limit]


# --- the archive: the general edition of each sent period ---------------------------------


@dataclass(frozen=True)
class Edition:
    """The general edition of a sent period: the publication numbers its sent rows carried
    (after < n <= upto, from the lowest start to the highest end of those rows), how many
    articles that is, and when the last of them went out."""

    period: Period
    after: int
    upto: int
    articles: int
    sent_at: datetime | None


def _editions(*where: ColumnElement[bool]) -> Any:
    """The editions of the periods whose sent rows match `where`, as a subquery; a period
    whose window holds no article (any more) has none."""
    windows = (
        select(
            Delivery.period_key.label("key"),
            func.min(Delivery.period_start).label("start"),
            func.max(Delivery.period_end).label("end"),
            func.min(Delivery.after_article_id).label("after"),
            func.max(Delivery.upto_article_id).label("upto"),
            func.max(Delivery.sent_at).label("sent_at"),
        )
        .where(Delivery.status == DeliveryStatus.SENT, *where)
        .group_by(Delivery.period_key)
        .subquery()
    )
    articles = count_in_window(windows.c.after, windows.c.upto)
    return select(windows, articles.label("articles")).where(articles > 0).subquery()


def _edition(row: Any) -> Edition:
    frequency = Frequency(row.key.partition(":")[0])
    period = Period(frequency, row.start, row.end)
    return Edition(period, int(row.after), int(row.upto), int(row.articles), row.sent_at)


async def editions(session: AsyncSession, offset: int, limit: int) -> tuple[list[Edition], int]:
    """A page of the editions of all sent periods, newest period end first, and how many
    there are in all."""
    found = _editions()
    total = int(await session.scalar(select(func.count()).select_from(found)) or 0)
    rows = await session.execute(
        select(found).order_by(found.c.end.desc(), found.c.key).offset(offset).limit(limit)
    )
    return [_edition(row) for row in rows.all()], total


async def edition_starting(
    session: AsyncSession, frequency: Frequency, since: datetime, until: datetime
) -> Edition | None:
    """The edition of the frequency's sent period that starts in [since, until) (the newest,
    should the cron have changed and two started then); None if there is none."""
    found = _editions(
        Delivery.period_key.like(f"{frequency}:%"),
        Delivery.period_start >= since,
        Delivery.period_start < until,
    )
    row = (await session.execute(select(found).order_by(found.c.end.desc()).limit(1))).first()
    return None if row is None else _edition(row)

"""The delivery history: what the ledger says was sent to whom, counted per period and
listed per period, state or address, and the conditional updates behind an operator's
retry.

Owns no table (the rows are `ledger`'s): the states a row shows (its status, with a
pending row that was tried already shown as "retrying"), the per-period counts, filtered
and paged listings, an address's history, and making rows due again. Imports `subscribers`,
`queues` and `ledger`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from service.store.ledger import Delivery
from service.store.queues import DeliveryStatus
from service.store.subscribers import Address, AddressStatus, Frequency

# A pending row that was tried at least once waits for its retry.
RETRYING = "retrying"
DELIVERY_STATES = (
    "pending",
    RETRYING,
    "sending",
    "sent",
    "failed",
    "uncertain",
    "empty",
    "superseded",
)
_PENDING = str(DeliveryStatus.PENDING)
_STATE = case(
    (and_(Delivery.status == _PENDING, Delivery.attempts > 0), RETRYING),
    else_=Delivery.status,
)
_KEY_TIME = "%Y-%m-%dT%H:%MZ"  # how `Period.key` writes the period's end


def _end_of(period_key: str) -> datetime:
    """The end of a period, read from its key (`weekly:2026-11-23T06:00Z`)."""
    moment = datetime.strptime(period_key.partition(":")[2], _KEY_TIME)
    return moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class PeriodSummary:
    """One planned period of the ledger: how many of its rows are in which state."""

    key: str
    start: datetime
    end: datetime
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def frequency(self) -> Frequency:
        return Frequency(self.key.partition(":")[0])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, state: str) -> int:
        """How many rows of the period are in `state` (one of `DELIVERY_STATES`)."""
        return self.counts.get(state, 0)


@dataclass(frozen=True)
class DeliveryFilter:
    """Which ledger rows to list; an empty field does not filter."""

    period_keys: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    address: str | None = None  # a part of the address, any case
    address_id: int | None = None
    ids: tuple[int, ...] = ()

    def where(self) -> list[ColumnElement[bool]]:
        """The filter as conditions on `Delivery` joined with `Address`."""
        conditions: list[ColumnElement[bool]] = []
        if self.period_keys:
            conditions.append(Delivery.period_key.in_(self.period_keys))
        if self.states:
            conditions.append(_STATE.in_(self.states))
        if self.address:
            part = self.address.strip().lower()
            conditions.append(func.lower(Address.email).contains(part, autoescape=True))
        if self.address_id is not None:
            conditions.append(Delivery.address_id == self.address_id)
        if self.ids:
            conditions.append(Delivery.id.in_(self.ids))
        return conditions


@dataclass(frozen=True)
class HistoryEntry:
    """One ledger row as the history shows it."""

    id: int
    address_id: int
    email: str
    address_status: str
    period_key: str
    period_start: datetime
    period_end: datetime
    state: str  # one of `DELIVERY_STATES`
    attempts: int
    last_reply: str | None
    last_attempt_at: datetime | None
    sent_at: datetime | None
    next_attempt_at: datetime
    claimed_by: str | None

    @property
    def when(self) -> datetime | None:
        """When it was sent, else when it was last tried."""
        return self.sent_at or self.last_attempt_at


_ENTRY_COLUMNS = (
    Delivery.id,
    Delivery.address_id,
    Address.email,
    Address.status,
    Delivery.period_key,
    Delivery.period_start,
    Delivery.period_end,
    _STATE,
    Delivery.attempts,
    Delivery.last_reply,
    Delivery.last_attempt_at,
    Delivery.sent_at,
    Delivery.next_attempt_at,
    Delivery.claimed_by,
)


async def period_summaries(
    session: AsyncSession,
    *,
    frequency: Frequency | None = None,
    keys: Sequence[str] = (),
    limit: int = 20,
    offset: int = 0,
) -> list[PeriodSummary]:
    """The planned periods, newest end first (of one frequency, or only `keys`), each with
    its rows counted by state."""
    chosen = sorted(
        await _period_keys(session, frequency, keys), key=lambda k: (_end_of(k), k), reverse=True
    )[offset : offset + limit]
    if not chosen:
        return []
    rows = await session.execute(
        select(
            Delivery.period_key,
            func.min(Delivery.period_start),
            func.max(Delivery.period_end),
            _STATE,
            func.count(),
        )
        .where(Delivery.period_key.in_(chosen))
        .group_by(Delivery.period_key, _STATE)
    )
    spans: dict[str, tuple[datetime, datetime]] = {}
    counts: dict[str, dict[str, int]] = {key: {} for key in chosen}
    for key, start, end, state, count in rows.all():
        spans[key] = (start, end)
        counts[key][state] = int(count)
    return [PeriodSummary(key, *spans[key], counts[key]) for key in chosen]


async def count_periods(session: AsyncSession, frequency: Frequency | None = None) -> int:
    """How many periods (of one frequency) the ledger has, for paging `period_summaries`."""
    return len(await _period_keys(session, frequency, ()))


async def _period_keys(
    session: AsyncSession, frequency: Frequency | None, keys: Sequence[str]
) -> list[str]:
    # Distinct keys come off the (period_key, status) index alone; ordering by the end
    # the key carries happens here, on a few hundred keys instead of every row.
    query = select(Delivery.period_key).distinct()
    if keys:
        query = query.where(Delivery.period_key.in_(keys))
    found = list(await session.scalars(query))
    if frequency is not None:
        found = [key for key in found if key.startswith(f"{frequency}:")]
    return found


async def period_keys_ending(
    session: AsyncSession, frequency: Frequency, since: datetime, until: datetime
) -> list[str]:
    """The keys of the frequency's planned periods that end in [since, until), oldest
    first."""
    keys = await _period_keys(session, frequency, ())
    return sorted(key for key in keys if since <= _end_of(key) < until)


async def find_deliveries(
    session: AsyncSession, where: DeliveryFilter, *, limit: int | None = 50, offset: int = 0
) -> list[HistoryEntry]:
    """The rows matching `where` with their addresses: newest period first, then in the
    order they were planned; a page of `limit` rows from `offset`."""
    query = (
        select(*_ENTRY_COLUMNS)
        .join(Address, Address.id == Delivery.address_id)
        .where(*where.where())
        .order_by(Delivery.period_end.desc(), Delivery.id)
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    return [HistoryEntry(*row) for row in (await session.execute(query)).all()]


async def count_deliveries(session: AsyncSession, where: DeliveryFilter) -> int:
    """How many rows match `where`, for paging `find_deliveries`."""
    query = select(func.count()).select_from(Delivery).where(*where.where())
    if where.address:
        query = query.join(Address, Address.id == Delivery.address_id)
    return int(await session.scalar(query) or 0)


async def address_history(
    session: AsyncSession, address_id: int, *, limit: int | None = 100, offset: int = 0
) -> list[HistoryEntry]:
    """The digests of one address, newest period first."""
    return await find_deliveries(
        session, DeliveryFilter(address_id=address_id), limit=limit, offset=offset
    )


async def later_periods(session: AsyncSession, delivery_ids: Sequence[int]) -> dict[int, str]:
    """For each of these rows that is not its address's newest, the newest later period
    planned for the address."""
    later = aliased(Delivery)
    rows = await session.execute(
        select(Delivery.id, func.max(later.period_key))
        .join(later, later.address_id == Delivery.address_id)
        .where(Delivery.id.in_(delivery_ids), later.period_end > Delivery.period_end)
        .group_by(Delivery.id)
    )
    return {delivery_id: key for delivery_id, key in rows.all()}


def _scope(ids: Sequence[int], period_keys: Sequence[str]) -> ColumnElement[bool]:
    if not ids and not period_keys:
        raise ValueError("a retry needs delivery ids or period keys")
    if ids:
        return Delivery.id.in_(ids)
    return Delivery.period_key.in_(period_keys)


def _not_claimed(now: datetime) -> ColumnElement[bool]:
    return or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now)


async def _update(
    session: AsyncSession, where: list[ColumnElement[bool]], **values: Any
) -> list[int]:
    result = await session.execute(
        update(Delivery)
        .where(*where)
        .values(**values)
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(row[0] for row in result.all())


async def make_deliveries_due(
    session: AsyncSession,
    now: datetime,
    *,
    ids: Sequence[int] = (),
    period_keys: Sequence[str] = (),
) -> list[int]:
    """Make pending rows that wait for a later retry (given by id, or every one of these
    periods) due now; returns the ids changed.

    Conditional on the status, so a row a sender claimed meanwhile is left alone: on
    PostgreSQL the UPDATE waits for the claiming transaction and then finds the row no
    longer pending.
    """
    return await _update(
        session,
        [
            _scope(ids, period_keys),
            Delivery.status == _PENDING,
            Delivery.next_attempt_at > now,
            _not_claimed(now),
        ],
        next_attempt_at=now,
    )


async def reopen_failed_deliveries(
    session: AsyncSession,
    now: datetime,
    *,
    ids: Sequence[int] = (),
    period_keys: Sequence[str] = (),
) -> list[int]:
    """Make failed rows (by id, or every one of these periods) pending and due now, their
    attempts counted afresh; returns the ids changed.

    Only a row that cannot have arrived (no uncertain attempt), of an active address, and
    the newest row of its address: a later period's row carries its articles already (the
    high-water mark skips failed rows), so sending it too would send them twice.
    Conditional on all of that in one statement, so concurrent retries change a row once.
    """
    later = aliased(Delivery)
    return await _update(
        session,
        [
            _scope(ids, period_keys),
            Delivery.status == str(DeliveryStatus.FAILED),
            Delivery.uncertain_attempts == 0,
            _not_claimed(now),
            exists().where(
                Address.id == Delivery.address_id, Address.status == str(AddressStatus.ACTIVE)
            ),
            ~exists().where(
                later.address_id == Delivery.address_id, later.period_end > Delivery.period_end
            ),
        ],
        status=_PENDING,
        attempts=0,
        next_attempt_at=now,
        claimed_by=None,
        claimed_until=None,
    )

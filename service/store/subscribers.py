"""Subscribers: municipalities, their contact addresses and subscription requests.

Owns the tables `subscribers`, `addresses` and `confirmation_requests`: creating, searching and
finding municipalities, adding, activating, pausing and unsubscribing addresses, an address's
failure streak, and the requests kept to limit confirmation mails. Imports `base`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, Select, String, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.clock import utcnow
from service.store.base import Base, BigId, UTCDateTime, unique_slug


class Frequency(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class AddressStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    PAUSED = "paused"  # by an operator: no digests until resumed


class Subscriber(Base):
    """A municipality; it receives digests at its contact addresses."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    ags: Mapped[str | None] = mapped_column(String(8))
    bundesland: Mapped[str | None] = mapped_column(String(60))
    partner: Mapped[str | None] = mapped_column(String(200))
    frequency: Mapped[str] = mapped_column(String(10))
    topics: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    addresses: Mapped[list[Address]] = relationship(
        back_populates="subscriber",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="Address.id",
    )


class Address(Base):
    """One contact address of a subscriber, with its own consent status."""

    __tablename__ = "addresses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320), unique=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    subscriber: Mapped[Subscriber] = relationship(back_populates="addresses", lazy="selectin")


class ConfirmationRequest(Base):
    """A subscription request, kept to limit confirmation mails per address and client."""

    __tablename__ = "confirmation_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    client: Mapped[str] = mapped_column(String(100), index=True)
    mailed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


async def create_subscriber(
    session: AsyncSession,
    *,
    name: str,
    frequency: Frequency,
    ags: str | None = None,
    bundesland: str | None = None,
    partner: str | None = None,
    topics: Sequence[str] = (),
    now: datetime | None = None,
) -> Subscriber:
    subscriber = Subscriber(
        name=name,
        slug=await unique_slug(session, Subscriber.slug, name),
        ags=ags,
        bundesland=bundesland,
        partner=partner,
        frequency=str(frequency),
        topics=list(topics),
        created_at=now or utcnow(),
        addresses=[],
    )
    session.add(subscriber)
    await session.flush()
    return subscriber


async def subscriber_by_name(session: AsyncSession, name: str) -> Subscriber | None:
    return await session.scalar(
        select(Subscriber).where(func.lower(Subscriber.name) == name.lower()).limit(1)
    )


async def subscriber_by_slug(session: AsyncSession, slug: str) -> Subscriber | None:
    return await session.scalar(select(Subscriber).where(Subscriber.slug == slug))


async def all_subscribers(session: AsyncSession) -> Sequence[Subscriber]:
    return (await session.scalars(select(Subscriber).order_by(Subscriber.name))).all()


async def subscriber_names(session: AsyncSession) -> list[tuple[int, str]]:
    """Every municipality's id and name, by name (without loading their addresses)."""
    rows = await session.execute(select(Subscriber.id, Subscriber.name).order_by(Subscriber.name))
    return [(id_, name) for id_, name in rows.all()]


async def address_by_email(session: AsyncSession, email: str) -> Address | None:
    return await session.scalar(select(Address).where(Address.email == email.lower()))


async def address_by_id(session: AsyncSession, address_id: int) -> Address | None:
    return await session.get(Address, address_id)


async def add_address(
    session: AsyncSession,
    subscriber: Subscriber,
    email: str,
    status: AddressStatus,
    now: datetime | None = None,
) -> Address:
    now = now or utcnow()
    address = Address(
        email=email.lower(),
        status=str(status),
        consecutive_failures=0,
        created_at=now,
        confirmed_at=now if status is AddressStatus.ACTIVE else None,
    )
    subscriber.addresses.append(address)
    await session.flush()
    return address


def activate(address: Address, now: datetime) -> None:
    if address.status != AddressStatus.ACTIVE:
        address.status = AddressStatus.ACTIVE
        address.confirmed_at = now
        address.unsubscribed_at = None
        address.consecutive_failures = 0


def unsubscribe(address: Address, now: datetime) -> None:
    if address.status != AddressStatus.UNSUBSCRIBED:
        address.status = AddressStatus.UNSUBSCRIBED
        address.unsubscribed_at = now


def pause(address: Address) -> bool:
    """Stop digests to an active or bounced address; False when it is in no such state."""
    if address.status not in {AddressStatus.ACTIVE, AddressStatus.BOUNCED}:
        return False
    address.status = AddressStatus.PAUSED
    return True


def resume(address: Address) -> bool:
    """Send digests to a paused address again; False when it was not paused."""
    if address.status != AddressStatus.PAUSED:
        return False
    address.status = AddressStatus.ACTIVE
    address.consecutive_failures = 0
    return True


@dataclass(frozen=True)
class SubscriberSearch:
    """What the console's list of municipalities is filtered by; None or "" means any."""

    text: str = ""  # part of the name or of an address
    bundesland: str | None = None
    partner: str = ""  # part of the partner's name
    frequency: str | None = None
    status: str | None = None  # an address status


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _searched(
    query: Select[Subscriber, Address], search: SubscriberSearch
) -> Select[Subscriber, Address]:
    if search.text.strip():
        pattern = _like(search.text.strip())
        query = query.where(
            or_(
                func.lower(Subscriber.name).like(pattern, escape="\\"),
                Address.email.like(pattern, escape="\\"),
            )
        )
    if search.partner.strip():
        pattern = _like(search.partner.strip())
        query = query.where(func.lower(Subscriber.partner).like(pattern, escape="\\"))
    if search.bundesland:
        query = query.where(Subscriber.bundesland == search.bundesland)
    if search.frequency:
        query = query.where(Subscriber.frequency == search.frequency)
    if search.status:
        query = query.where(Address.status == search.status)
    return query


async def search_addresses(
    session: AsyncSession, search: SubscriberSearch, *, offset: int = 0, limit: int | None = 50
) -> tuple[int, list[tuple[Subscriber, Address | None]]]:
    """Municipalities with each of their addresses (one row per address, one row without
    an address for a municipality that has none), by name and address, and how many rows
    match in all."""
    rows = _searched(
        select(Subscriber, Address).outerjoin(Address, Address.subscriber_id == Subscriber.id),
        search,
    )
    total = await session.scalar(select(func.count()).select_from(rows.subquery()))
    page = rows.order_by(func.lower(Subscriber.name), Subscriber.id, Address.id)
    found = await session.execute(page.offset(offset).limit(limit))
    return int(total or 0), [(subscriber, address) for subscriber, address in found.all()]


async def remove_subscriber(session: AsyncSession, subscriber: Subscriber) -> None:
    await session.delete(subscriber)


async def count_recent_requests(
    session: AsyncSession, *, since: datetime, email: str | None = None, client: str | None = None
) -> int:
    query = select(func.count()).select_from(ConfirmationRequest)
    query = query.where(ConfirmationRequest.created_at >= since)
    if email is not None:
        query = query.where(ConfirmationRequest.email == email.lower())
        query = query.where(ConfirmationRequest.mailed.is_(True))
    if client is not None:
        query = query.where(ConfirmationRequest.client == client)
    return int(await session.scalar(query) or 0)


async def record_request(
    session: AsyncSession, email: str, client: str, mailed: bool, now: datetime
) -> None:
    session.add(
        ConfirmationRequest(email=email.lower(), client=client, mailed=mailed, created_at=now)
    )
    await session.execute(
        delete(ConfirmationRequest).where(ConfirmationRequest.created_at < now - timedelta(days=2))
    )


async def requests_for(session: AsyncSession, email: str) -> Sequence[ConfirmationRequest]:
    return (
        await session.scalars(
            select(ConfirmationRequest)
            .where(ConfirmationRequest.email == email.lower())
            .order_by(ConfirmationRequest.id)
        )
    ).all()


async def note_address_outcome(
    session: AsyncSession, address_id: int, *, permanent_failure: bool, bounce_after: int
) -> None:
    """Count consecutive permanent failures; enough of them mark the address bounced."""
    address = await session.get(Address, address_id)
    if address is None:
        return
    if not permanent_failure:
        address.consecutive_failures = 0
        return
    address.consecutive_failures += 1
    if address.consecutive_failures >= bounce_after:
        address.status = AddressStatus.BOUNCED

"""Consent records and the counts that outlive erased addresses (DSGVO).

Owns the tables `consents` and `anonymous_counts`: recording, confirming (once) and
voiding consents, and erasing an address with everything kept about it except anonymous
counts. Imports `base`, `subscribers` and `ledger`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from service.store.base import Base, BigId, UTCDateTime
from service.store.ledger import Delivery
from service.store.subscribers import Address, AddressStatus, ConfirmationRequest


class Consent(Base):
    """The record of one consent: asked for when, with which form text, from where (as a
    keyed hash), and whether and when the person confirmed it. `nonce` is the one-time id
    its confirmation link carries; a used or voided record never confirms again."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address_id: Mapped[int] = mapped_column(
        ForeignKey("addresses.id", ondelete="CASCADE"), index=True
    )
    source: Mapped[str] = mapped_column(String(20))  # form, api or operator
    form_version: Mapped[str | None] = mapped_column(String(40))
    client_hash: Mapped[str | None] = mapped_column(String(64))
    nonce: Mapped[str | None] = mapped_column(String(43), unique=True)
    # The address's status when the link was issued; the link works only while it holds.
    issued_status: Mapped[str] = mapped_column(String(20))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirm_client_hash: Mapped[str | None] = mapped_column(String(64))
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AnonymousCount(Base):
    """Counters that outlive erased addresses: what was sent, never to whom."""

    __tablename__ = "anonymous_counts"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


async def add_consent(session: AsyncSession, consent: Consent) -> Consent:
    session.add(consent)
    await session.flush()
    return consent


async def consent_by_id(session: AsyncSession, consent_id: int) -> Consent | None:
    return await session.get(Consent, consent_id)


async def consents_of(session: AsyncSession, address_id: int) -> Sequence[Consent]:
    return (
        await session.scalars(
            select(Consent).where(Consent.address_id == address_id).order_by(Consent.id)
        )
    ).all()


async def open_consent(session: AsyncSession, address_id: int) -> Consent | None:
    """The newest consent of an address that is neither confirmed nor voided: the one a
    queued confirmation mail links to."""
    return await session.scalar(
        select(Consent)
        .where(
            Consent.address_id == address_id,
            Consent.confirmed_at.is_(None),
            Consent.voided_at.is_(None),
        )
        .order_by(Consent.id.desc())
        .limit(1)
    )


async def use_consent(
    session: AsyncSession, consent_id: int, nonce: str, now: datetime, client_hash: str | None
) -> bool:
    """Mark a consent confirmed, once: False when it was used or voided meanwhile. One
    conditional UPDATE, so two clicks at the same moment cannot both confirm."""
    result = await session.execute(
        update(Consent)
        .where(
            Consent.id == consent_id,
            Consent.nonce == nonce,
            Consent.confirmed_at.is_(None),
            Consent.voided_at.is_(None),
        )
        .values(confirmed_at=now, confirm_client_hash=client_hash)
        .returning(Consent.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


async def void_open_consents(session: AsyncSession, address_id: int, now: datetime) -> int:
    """Void every unconfirmed consent of an address, so no link issued so far confirms."""
    result = await session.execute(
        update(Consent)
        .where(
            Consent.address_id == address_id,
            Consent.confirmed_at.is_(None),
            Consent.voided_at.is_(None),
        )
        .values(voided_at=now)
        .returning(Consent.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())


async def add_to_counts(session: AsyncSession, counts: dict[str, int]) -> None:
    """Add to named anonymous counters, creating them at zero."""
    for name, count in sorted(counts.items()):
        row = await session.get(AnonymousCount, name, with_for_update=True)
        if row is None:
            session.add(AnonymousCount(name=name, count=count))
        else:
            row.count += count
    await session.flush()


async def anonymous_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(AnonymousCount.name, AnonymousCount.count))
    return {name: int(count) for name, count in rows.all()}


async def erase_address(
    session: AsyncSession, address: Address, *, counted_as: str = "erasures"
) -> dict[str, int]:
    """Erase an address with its consents, ledger rows and requests, keeping only anonymous
    counts (deliveries per period and outcome, and one under `counted_as`); a municipality
    left without any address goes too. Returns the counts added."""
    counts: dict[str, int] = {counted_as: 1}
    rows = await session.execute(
        select(Delivery.period_key, Delivery.status, func.count())
        .where(Delivery.address_id == address.id)
        .group_by(Delivery.period_key, Delivery.status)
    )
    for period_key, status, count in rows.all():
        counts[f"deliveries:{period_key}:{status}"] = int(count)
    await session.execute(delete(Delivery).where(Delivery.address_id == address.id))
    await session.execute(delete(Consent).where(Consent.address_id == address.id))
    await session.execute(
        delete(ConfirmationRequest).where(ConfirmationRequest.email == address.email.lower())
    )
    subscriber = address.subscriber
    await session.delete(address)
    await session.flush()
    await session.refresh(subscriber, ["addresses"])
    if not subscriber.addresses:
        await session.delete(subscriber)
    await add_to_counts(session, counts)
    return counts


async def purge_unconfirmed(session: AsyncSession, requested_before: datetime) -> int:
    """Erase the addresses whose subscription was requested but never confirmed, when the
    last request is older than `requested_before` (their links expired long ago: keeping
    them serves no purpose, Art. 5(1)(e) DSGVO), and the requests kept for rate limits from
    before then. An address that was ever confirmed keeps its records (they prove the
    consent its digests were sent under), and so does one with ledger rows. Returns how
    many addresses went; each is counted as `unconfirmed_purged`."""
    last_request = (
        select(Consent.address_id).where(Consent.requested_at >= requested_before).scalar_subquery()
    )
    candidates = await session.scalars(
        select(Address)
        .where(
            Address.status == AddressStatus.PENDING,
            Address.confirmed_at.is_(None),
            Address.created_at < requested_before,
            Address.id.not_in(last_request),
            ~select(Delivery.id).where(Delivery.address_id == Address.id).exists(),
        )
        .order_by(Address.id)
    )
    purged = 0
    for address in candidates.all():
        await erase_address(session, address, counted_as="unconfirmed_purged")
        purged += 1
    await session.execute(
        delete(ConfirmationRequest).where(ConfirmationRequest.created_at < requested_before)
    )
    return purged

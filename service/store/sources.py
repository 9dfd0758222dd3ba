"""Source records: the `sources` table (where news comes from and how its polling went)
and its queries, claims with a lease included.

Imports `store.base`, `store.articles` and `errors`. Functions take an `AsyncSession` and
leave transaction boundaries to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from service.errors import PartnerpostError
from service.store.articles import Article
from service.store.base import Base, UTCDateTime, claim_chosen

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class SourceStatus(StrEnum):
    ACTIVE = "active"  # polled when due
    PAUSED = "paused"  # by the operator
    GONE = "gone"  # answered 410, or 404 several times in a row: shown, never polled


class Source(Base):
    """Where news comes from: a URL, how to read it, and how its polling went."""

    __tablename__ = "sources"
    __table_args__ = (Index("ix_sources_due", "status", "next_fetch_at"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(20))
    every_seconds: Mapped[int] = mapped_column(Integer)
    topics: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Keep only entries mentioning one of these words or a subscribed partner town; an
    # empty list keeps every entry.
    only_mentioning: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20))
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_fetch_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # None until the first successful fetch, which is a backfill that reaches no digest.
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Rejected entries and other remarks of the last successful fetch.
    last_notes: Mapped[str | None] = mapped_column(Text)
    items: Mapped[int | None] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    not_found: Mapped[int] = mapped_column(Integer, default=0)  # consecutive 404s
    next_fetch_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SourceExistsError(PartnerpostError, ValueError):
    """A source of that name is registered already."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a source named {name!r} exists already; choose another --name")


class SourceNotFoundError(PartnerpostError, LookupError):
    """No source has the given name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no source named {name!r}; `partnerpost sources list` shows them")


async def add_source(
    session: AsyncSession,
    *,
    name: str,
    url: str,
    fmt: str,
    every: timedelta,
    now: datetime,
    topics: Sequence[str] = (),
    only_mentioning: Sequence[str] = (),
) -> Source:
    """Register a source, due at once; `SourceExistsError` when the name is taken."""
    if await source_by_name(session, name) is not None:
        raise SourceExistsError(name)
    source = Source(
        name=name,
        url=url,
        format=fmt,
        every_seconds=int(every.total_seconds()),
        topics=list(topics),
        only_mentioning=list(only_mentioning),
        status=str(SourceStatus.ACTIVE),
        created_at=now,
        failures=0,
        not_found=0,
        next_fetch_at=now,
    )
    session.add(source)
    await session.flush()
    return source


async def source_by_name(session: AsyncSession, name: str) -> Source | None:
    return await session.scalar(select(Source).where(Source.name == name))


async def get_source(session: AsyncSession, name: str) -> Source:
    """The source of that name, or `SourceNotFoundError`."""
    source = await source_by_name(session, name)
    if source is None:
        raise SourceNotFoundError(name)
    return source


async def all_sources(session: AsyncSession) -> Sequence[Source]:
    return (await session.scalars(select(Source).order_by(Source.name))).all()


async def failing_sources(session: AsyncSession) -> Sequence[Source]:
    """Sources whose last fetch failed, and those marked gone."""
    query = select(Source).where(
        or_(Source.status == SourceStatus.GONE, Source.failures > 0),
        Source.status != SourceStatus.PAUSED,
    )
    return (await session.scalars(query.order_by(Source.name))).all()


async def article_counts(session: AsyncSession) -> dict[int, int]:
    """Per source id, how many stored articles it brought."""
    rows = await session.execute(
        select(Article.source_id, func.count())
        .where(Article.source_id.is_not(None))
        .group_by(Article.source_id)
    )
    return {int(source_id or 0): int(count) for source_id, count in rows.all()}


def set_status(source: Source, status: SourceStatus, now: datetime) -> None:
    """Pause, resume or mark gone; resuming makes the source due at once and forgets its
    failures (an operator who resumes a gone source expects it to be tried)."""
    source.status = str(status)
    if status is SourceStatus.ACTIVE:
        source.failures = 0
        source.not_found = 0
        source.next_fetch_at = now


async def remove_source(session: AsyncSession, source: Source) -> None:
    """Delete the source; the articles it brought stay (their `source_id` is cleared)."""
    await session.execute(
        update(Article)
        .where(Article.source_id == source.id)
        .values(source_id=None)
        .execution_options(synchronize_session=False)
    )
    await session.delete(source)


def _free(now: datetime) -> Any:
    return or_(Source.claimed_until.is_(None), Source.claimed_until < now)


async def claim_sources(
    session: AsyncSession,
    worker: str,
    now: datetime,
    lease: timedelta,
    *,
    limit: int,
    names: Sequence[str] | None = None,
) -> list[int]:
    """Claim up to `limit` sources for `worker`: the active ones that are due, or, given
    `names`, those sources whatever their schedule and status. A source another worker
    holds (its lease still running) is never claimed: PostgreSQL skips rows another
    transaction has locked, SQLite runs the claiming statement as one write."""
    free = _free(now)
    if names is None:
        wanted = and_(Source.status == SourceStatus.ACTIVE, Source.next_fetch_at <= now, free)
    else:
        wanted = and_(Source.name.in_(list(names)), free)
    chosen = select(Source.id).where(wanted).order_by(Source.next_fetch_at).limit(limit)
    values = {"claimed_by": worker, "claimed_until": now + lease}
    return sorted(await claim_chosen(session, Source, chosen, wanted, values))


async def finish_source(
    session: AsyncSession, source_id: int, worker: str, values: dict[str, Any]
) -> bool:
    """Record a poll's outcome on a claimed source and release it; False if the claim was
    lost meanwhile (its lease ran out and another worker took it)."""
    result = await session.execute(
        update(Source)
        .where(Source.id == source_id, Source.claimed_by == worker)
        .values(claimed_by=None, claimed_until=None, **values)
        .returning(Source.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


async def release_sources(session: AsyncSession, worker: str) -> int:
    """Hand back the sources `worker` claimed and did not finish."""
    result = await session.execute(
        update(Source)
        .where(Source.claimed_by == worker)
        .values(claimed_by=None, claimed_until=None)
        .returning(Source.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())

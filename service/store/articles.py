"""Articles: the news items, their topics, site facts and the publication sequence.

Owns the tables `articles`, `article_topics` and `site_facts`: what a saved article is
(`ArticleData`; `saving` writes it), the queries feeds and pages make, the feeds' version,
the numbering of committed articles that digests follow (`publish_committed`), and the
articles of a window of those numbers (a digest row's, an archived period's).
Imports `base` and `subscribers` (the feeds' version counts municipalities).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    ForeignKey,
    String,
    Table,
    Text,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload
from sqlalchemy.sql.selectable import ScalarSelect

from service import slugs
from service.errors import ArticleNotFoundError
from service.store.base import Base, BigId, UTCDateTime, advisory_xact_lock, time_sums
from service.store.subscribers import Subscriber

# Feed ids are UUIDs derived from the stable key in this namespace: never change it.
ARTICLE_ID_NAMESPACE = uuid.UUID("6f1c8d0e-5b7a-4f43-9a39-2f4c3a1d9e10")
_NAMESPACE_BYTES = ARTICLE_ID_NAMESPACE.bytes


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(500), unique=True)
    guid: Mapped[str] = mapped_column(String(64), unique=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    title: Mapped[str] = mapped_column(Text)
    teaser: Mapped[str] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    place: Mapped[str] = mapped_column(String(200))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    image_caption: Mapped[str | None] = mapped_column(Text)
    image_url: Mapped[str | None] = mapped_column(Text)
    source_url: Mapped[str | None] = mapped_column(Text)
    # The source (`sources.id`) that brought it; None when imported otherwise, or after its
    # source was removed.
    source_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    # False for a backfill imported with --no-notify: feeds show it, no digest carries it.
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    # Its place in commit order, given once it is committed (see `publish_committed`).
    publication_seq: Mapped[int | None] = mapped_column(BigInteger, index=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Set while an operator hides it: no feed, page or digest not yet sent shows it.
    hidden_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    topic_rows: Mapped[list[ArticleTopic]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="ArticleTopic.topic"
    )

    @property
    def topics(self) -> list[str]:
        return [row.topic for row in self.topic_rows]


class ArticleTopic(Base):
    __tablename__ = "article_topics"

    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)


class SiteFact(Base):
    """Small facts learnt from input, e.g. the heading of an imported listing page."""

    __tablename__ = "site_facts"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class ArticleData:
    """A validated article as ingest hands it to the store."""

    key: str
    title: str
    teaser: str
    place: str
    published_at: datetime
    body: str | None = None
    image_caption: str | None = None
    image_url: str | None = None
    source_url: str | None = None
    topics: tuple[str, ...] = field(default_factory=tuple)
    notify: bool = True


class SaveOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def article_guid(key: str) -> str:
    """The feed id of an article: derived from its stable key, so edits never change it.

    `uuid.uuid5(ARTICLE_ID_NAMESPACE, key)` spelt out (RFC 4122, 4.3: SHA-1 of namespace
    and name, version and variant bits set): building a `UUID` only to print it took three
    quarters of the time, 50 ms of an import of 10,000 articles."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + key.encode()).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50
    digest[8] = digest[8] & 0x3F | 0x80
    h = digest.hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


async def newest_articles(
    session: AsyncSession, limit: int, topic: str | None = None
) -> Sequence[Article]:
    """The visible (not hidden) articles, newest first by publication date, then by
    insertion order."""
    query = (
        select(Article)
        .where(Article.hidden_at.is_(None))
        .order_by(Article.published_at.desc(), Article.id.desc())
        .limit(limit)
    )
    if topic is not None:
        query = query.join(ArticleTopic).where(ArticleTopic.topic == topic)
    return (await session.scalars(query.options(selectinload(Article.topic_rows)))).all()


async def article_by_slug(session: AsyncSession, slug: str) -> Article:
    article = await session.scalar(select(Article).where(Article.slug == slug))
    if article is None:
        raise ArticleNotFoundError(slug)
    return article


async def all_topics(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(ArticleTopic.topic).distinct().order_by("topic")))


async def topic_slugs(session: AsyncSession) -> dict[str, str]:
    """Each topic's distinct slug; of two that would collide, the one used first (by the
    oldest article that has it) keeps the plain slug."""
    first_use = select(ArticleTopic.topic, func.min(ArticleTopic.article_id)).group_by(
        ArticleTopic.topic
    )
    rows = sorted((first, topic) for topic, first in await session.execute(first_use))
    return slugs.topic_slugs(topic for _, topic in rows)


async def count_articles(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Article)) or 0)


async def feeds_version(session: AsyncSession) -> str:
    """A value that changes whenever something feeds show changes: an article is added,
    edited, hidden, shown again or removed, a municipality joins or leaves, the listing
    heading changes (an edit moves `updated_at`, later or earlier: see `time_sums`)."""
    articles = (
        await session.execute(
            select(
                func.count(Article.id),
                func.max(Article.id),
                func.max(Article.updated_at),
                func.count(Article.hidden_at),
                func.max(Article.hidden_at),
                *time_sums(Article.updated_at, session.get_bind().dialect.name),
            )
        )
    ).one()
    subscribers = (
        await session.execute(select(func.count(Subscriber.id), func.max(Subscriber.id)))
    ).one()
    heading = await get_fact(session, LISTING_HEADING)
    return f"{tuple(articles)}|{tuple(subscribers)}|{heading}"


# --- site facts -----------------------------------------------------------------------

LISTING_HEADING = "listing_heading"


async def get_fact(session: AsyncSession, name: str) -> str | None:
    fact = await session.get(SiteFact, name)
    return fact.value if fact else None


async def set_fact(session: AsyncSession, name: str, value: str) -> None:
    fact = await session.get(SiteFact, name)
    if fact is None:
        session.add(SiteFact(name=name, value=value))
    else:
        fact.value = value


# --- what is new: the publication sequence ---
#
# "What is new" follows commit order, not id order. On PostgreSQL an article's id (and
# its created_at) is taken when its row is inserted, but the row becomes visible when
# its transaction commits: a long import holds ids 1..3000 while a small one commits
# id 3001, and a digest planned in between moved every mark past 3000 articles it never
# saw. There are two ways to a mark that covers only committed articles:
#   - bound the id mark by the oldest transaction still in flight (store each article's
#     xid8, cap the mark below `pg_snapshot_xmin(pg_current_snapshot())`): PostgreSQL
#     only, and one long import, or any idle transaction, holds back every digest;
#   - number articles after they are committed. We do this: `publish_committed` gives
#     each visible article without a number the next numbers, under a lock that
#     serializes numbering (an advisory transaction lock on PostgreSQL; on
#     SQLite the write lock every write transaction takes at BEGIN). An article whose
#     transaction has not committed is invisible to it and gets a higher number later,
#     so every number up to the current maximum belongs to a committed article, and a
#     mark over numbers never skips one.
# Planning numbers within its own transaction, right before it reads the newest number:
# numbering where the numbers are used needs no recovery step for an import that
# crashed between its commit and a separate numbering transaction. Edits keep their
# article's number, so an edit is never sent again (as before, with ids).


async def publish_committed(session: AsyncSession) -> int:
    """Number the committed articles that have no publication number yet, in id order,
    after every numbered one; returns how many. Runs in the caller's transaction and
    holds the numbering lock until it ends."""
    await advisory_xact_lock(await session.connection(), "publish")
    unnumbered = list(
        await session.scalars(
            select(Article.id).where(Article.publication_seq.is_(None)).order_by(Article.id)
        )
    )
    if not unnumbered:
        return 0
    base = await newest_seq(session)
    table = cast(Table, Article.__table__)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("article_id"))
        .values(publication_seq=bindparam("seq")),
        [{"article_id": id_, "seq": base + n} for n, id_ in enumerate(unnumbered, start=1)],
    )
    return len(unnumbered)


async def newest_seq(session: AsyncSession) -> int:
    """The highest publication number given so far; 0 before the first."""
    query = select(func.coalesce(func.max(Article.publication_seq), 0))
    return int(await session.scalar(query) or 0)


def _in_window(
    after: int | ColumnElement[int], upto: int | ColumnElement[int]
) -> tuple[ColumnElement[bool], ...]:
    """Publication numbers after < n <= upto, without backfills imported not to notify and
    without hidden articles."""
    return (
        Article.publication_seq > after,
        Article.publication_seq <= upto,
        Article.notify.is_(True),
        Article.hidden_at.is_(None),
    )


def count_in_window(after: ColumnElement[int], upto: ColumnElement[int]) -> ScalarSelect[int]:
    """How many articles a window of columns carries, as a subquery (the archive counts
    each sent period's articles with it)."""
    return (
        select(func.count()).select_from(Article).where(*_in_window(after, upto)).scalar_subquery()
    )


async def digest_articles(
    session: AsyncSession,
    after: int,
    upto: int,
    topics: Sequence[str] = (),
    *,
    offset: int = 0,
    limit: int | None = None,
) -> Sequence[Article]:
    """The articles a digest row carries (publication numbers after < n <= upto), newest
    publication date first; `offset` and `limit` page through them."""
    query = (
        select(Article)
        .where(*_in_window(after, upto))
        .order_by(Article.published_at.desc(), Article.id.desc())
        .offset(offset)
        .limit(limit)
    )
    if topics:
        query = query.where(
            Article.id.in_(select(ArticleTopic.article_id).where(ArticleTopic.topic.in_(topics)))
        )
    return (await session.scalars(query)).all()

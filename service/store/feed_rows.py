"""Feed rows: what a feed build reads, in as few queries as it can, and the fingerprint that
tells a build nothing it shows has changed.

Owns no table. Rows come back as plain `FeedArticle` records (no ORM identity map or
relationship loading: a build reads thousands and changes none). Imports `base`,
`articles` and `subscribers`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import String, case, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import ScalarSelect

from service.store.articles import LISTING_HEADING, Article, ArticleTopic, SiteFact
from service.store.base import time_sums
from service.store.subscribers import Subscriber


@dataclass(frozen=True, slots=True)
class FeedArticle:
    """An article as a feed shows it."""

    id: int
    guid: str
    slug: str
    title: str
    teaser: str
    body: str | None
    published_at: datetime
    updated_at: datetime
    image_caption: str | None
    image_url: str | None
    source_url: str | None
    source_id: int | None
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Municipality:
    """A subscribed municipality as its feed needs it."""

    id: int
    slug: str
    name: str
    partner: str | None


_COLUMNS = (
    Article.id,
    Article.guid,
    Article.slug,
    Article.title,
    Article.teaser,
    Article.body,
    Article.published_at,
    Article.updated_at,
    Article.image_caption,
    Article.image_url,
    Article.source_url,
    Article.source_id,
)


# On SQLite the two dates come as the stored text, parsed by `_utc`: SQLAlchemy's
# DateTime result processing took a third of reading a thousand rows.
_SQLITE_COLUMNS = (
    *_COLUMNS[:6],
    type_coerce(Article.published_at, String()),
    type_coerce(Article.updated_at, String()),
    *_COLUMNS[8:],
)


async def feed_articles(
    session: AsyncSession, limit: int, topic: str | None = None
) -> list[FeedArticle]:
    """The newest `limit` visible articles (of `topic`), newest first by publication date,
    then by insertion order, as `newest_articles` orders them; two queries in all."""
    sqlite = (await session.connection()).dialect.name == "sqlite"
    query = select(*(_SQLITE_COLUMNS if sqlite else _COLUMNS)).where(Article.hidden_at.is_(None))
    if topic is not None:
        query = query.join(ArticleTopic).where(ArticleTopic.topic == topic)
    query = query.order_by(Article.published_at.desc(), Article.id.desc()).limit(limit)
    rows = (await session.execute(query)).all()
    if not rows:
        return []
    window = query.with_only_columns(Article.id).subquery()
    topics: dict[int, list[str]] = defaultdict(list)
    found = await session.execute(
        select(ArticleTopic.article_id, ArticleTopic.topic)
        .where(ArticleTopic.article_id.in_(select(window.c.id)))
        .order_by(ArticleTopic.topic)
    )
    for article_id, name in found:
        topics[article_id].append(name)
    # Positional: the columns are listed in the record's field order.
    make = cast(Any, FeedArticle)
    if sqlite:
        return [
            make(*row[:6], _utc(row[6]), _utc(row[7]), *row[8:], tuple(topics.get(row[0], ())))
            for row in rows
        ]
    return [make(*row, tuple(topics.get(row[0], ()))) for row in rows]


def _utc(stored: str) -> datetime:
    return datetime.fromisoformat(stored).replace(tzinfo=UTC)


async def municipalities(session: AsyncSession) -> list[Municipality]:
    """Every subscribed municipality, by name (then id, so the order is total)."""
    query = select(Subscriber.id, Subscriber.slug, Subscriber.name, Subscriber.partner)
    rows = await session.execute(query.order_by(Subscriber.name, Subscriber.id))
    return [Municipality(*row) for row in rows]


async def feeds_fingerprint(session: AsyncSession, extra: Sequence[str] = ()) -> str:
    """A digest of everything in the store a feed shows: it changes when an article is
    added, edited, hidden or shown again (each moves `updated_at`, later or earlier) or
    removed, when a municipality joins, leaves or is renamed (its name, partner or slug),
    or the listing heading changes. `extra` adds what the caller knows (settings that
    change output)."""
    return (await fingerprint_and_fact(session, extra))[0]


def _fact(name: str) -> ScalarSelect[str]:
    return select(SiteFact.value).where(SiteFact.name == name).scalar_subquery()


async def fingerprint_and_fact(
    session: AsyncSession, extra: Sequence[str] = (), fact: str = ""
) -> tuple[str, str | None]:
    """`feeds_fingerprint`, and the value of the site fact `fact`, in one query when there
    are no municipalities and two when there are (a build that finds nothing changed should
    cost next to nothing)."""
    hidden = Article.hidden_at.is_not(None)
    stamps = time_sums(Article.updated_at, session.get_bind().dialect.name)
    row = (
        await session.execute(
            select(
                func.count(Article.id),
                func.max(Article.id),
                func.sum(Article.id),
                func.max(Article.updated_at),
                func.count(Article.hidden_at),
                func.sum(case((hidden, Article.id), else_=0)),
                func.max(Article.hidden_at),
                _fact(LISTING_HEADING),
                select(func.count(Subscriber.id)).scalar_subquery(),
                _fact(fact),
                *stamps,
            )
        )
    ).one()
    digest = hashlib.sha256()
    for part in (*extra, repr((*row[:8], *row[10:]))):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    if row[8]:
        query = select(Subscriber.id, Subscriber.name, Subscriber.partner, Subscriber.slug)
        for subscriber in await session.execute(query.order_by(Subscriber.id)):
            digest.update(repr(tuple(subscriber)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest(), row[9]

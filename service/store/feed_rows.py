"""Feed rows: what a feed build reads, in as few queries as it can, and the fingerprint that
tells a build nothing it shows has changed.

Owns no table. Rows come back as plain `FeedArticle` records (no ORM identity map or
relationship loading: a build reads thousands and changes none). Imports `base`,
`articles` and `subscribers`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Integer, String, bindparam, case, func, select, type_coerce
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import ScalarSelect, Select

from service.store.articles import LISTING_HEADING, Article, ArticleTopic, SiteFact
from service.store.base import time_sums
from service.store.subscribers import Subscriber


class FeedArticle(NamedTuple):
    """An article as a feed shows it (a tuple: a build makes a thousand at a time)."""

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


def _columns(sqlite: bool) -> tuple[Any, ...]:
    """The article's columns, then its topics aggregated: on PostgreSQL an array in the
    database's order, on SQLite a JSON array (its `group_concat` cannot order before 3.44),
    sorted by `_topics` as SQLite's BINARY collation orders. On SQLite the two dates come as
    the stored UTC text with its offset appended, which `datetime.fromisoformat` reads ten
    times faster than SQLAlchemy's DateTime processing plus a `replace(tzinfo=UTC)`."""
    # Correlated on the article only: a topic feed's query joins `article_topics` too.
    own = ArticleTopic.article_id == Article.id
    if not sqlite:
        topics = aggregate_order_by(ArticleTopic.topic, ArticleTopic.topic)
        array = select(func.array_agg(topics)).where(own).correlate(Article)
        return (*_COLUMNS, array.scalar_subquery())
    stamps = (type_coerce(c, String()).concat("+00:00") for c in _COLUMNS[6:8])
    agg = select(func.json_group_array(ArticleTopic.topic)).where(own).correlate(Article)
    return (*_COLUMNS[:6], *stamps, *_COLUMNS[8:], agg.scalar_subquery())


async def feed_articles(
    session: AsyncSession, limit: int, topic: str | None = None
) -> list[FeedArticle]:
    """The newest `limit` visible articles (of `topic`), newest first by publication date,
    then by insertion order, as `newest_articles` orders them; one query, plain rows."""
    connection = await session.connection()
    sqlite = connection.dialect.name == "sqlite"
    query = _feed_articles_query(sqlite, topic is not None)
    rows = (await connection.execute(query, {"limit": limit, "topic": topic})).all()
    # Positional: the columns are listed in the record's field order.
    make = cast(Any, FeedArticle)
    if sqlite:
        parse = datetime.fromisoformat
        return [
            make(*row[:6], parse(row[6]), parse(row[7]), *row[8:12], _topics(row[12]))
            for row in rows
        ]
    return [make(*row[:12], tuple(row[12] or ())) for row in rows]


@functools.cache
def _feed_articles_query(sqlite: bool, of_topic: bool) -> Select[Any]:
    """`feed_articles`' statement, built once: the limit and the topic are parameters."""
    limit = bindparam("limit", type_=Integer)
    order = (Article.published_at.desc(), Article.id.desc())
    visible = Article.hidden_at.is_(None)
    if not of_topic:
        return select(*_columns(sqlite)).where(visible).order_by(*order).limit(limit)
    # The topic's newest ids first, then their rows: sorting whole rows of a topic that 2,500
    # of 10,000 articles have took SQLite 0.15 s, sorting their ids a fifth of that; walking
    # the date index until enough have the topic is faster still, but reads every article
    # when a topic is rare.
    topic = ArticleTopic.topic == bindparam("topic")
    newest = select(Article.id).join(ArticleTopic).where(visible, topic)
    picked = Article.id.in_(newest.order_by(*order).limit(limit))
    return select(*_columns(sqlite)).where(picked).order_by(*order)


def _topics(aggregated: str) -> tuple[str, ...]:
    """The topics of SQLite's `json_group_array`, in code point order: the order of SQLite's
    BINARY collation, as UTF-8 bytes compare like their code points."""
    if aggregated == "[]":
        return ()
    return tuple(sorted(_JSON.raw_decode(aggregated)[0]))


_JSON = json.JSONDecoder()  # `raw_decode` skips what `json.loads` checks first: 4x faster


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
    return (await fingerprint_and_facts(session, extra))[0]


def _fact(name: str) -> ScalarSelect[str]:
    return select(SiteFact.value).where(SiteFact.name == name).scalar_subquery()


async def fingerprint_and_facts(
    session: AsyncSession, extra: Sequence[str] = (), facts: Sequence[str] = ()
) -> tuple[str, list[str | None]]:
    """`feeds_fingerprint`, and the values of the site facts `facts`, in one query when
    there are no municipalities and two when there are (a build that finds nothing changed
    should cost next to nothing)."""
    query, stamps = _fingerprint_query(session.get_bind().dialect.name, tuple(facts))
    row = (await session.execute(query)).one()
    digest = hashlib.sha256()
    sums = row[9 : 9 + stamps]
    for part in (*extra, repr((*row[:8], *sums))):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    if row[8]:
        subscribers = select(Subscriber.id, Subscriber.name, Subscriber.partner, Subscriber.slug)
        for subscriber in await session.execute(subscribers.order_by(Subscriber.id)):
            digest.update(repr(tuple(subscriber)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest(), list(row[9 + stamps :])


@functools.cache
def _fingerprint_query(dialect: str, facts: tuple[str, ...]) -> tuple[Select[Any], int]:
    """The fingerprint's statement and how many time sums it holds, built once per dialect
    and facts: building and keying it for SQLAlchemy's cache took longer than SQLite takes
    to run it over a thousand articles."""
    hidden = Article.hidden_at.is_not(None)
    stamps = time_sums(Article.updated_at, dialect)
    query = select(
        func.count(Article.id),
        func.max(Article.id),
        func.sum(Article.id),
        func.max(Article.updated_at),
        func.count(Article.hidden_at),
        func.sum(case((hidden, Article.id), else_=0)),
        func.max(Article.hidden_at),
        _fact(LISTING_HEADING),
        select(func.count(Subscriber.id)).scalar_subquery(),
        *stamps,
        *(_fact(name) for name in facts),
    )
    return query, len(stamps)

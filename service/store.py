"""The store: schema, engine, sessions and every query partnerpost makes.

Owns the tables (articles, their topics, site facts) and the only place where SQLite and
PostgreSQL differ (`Capabilities`). Functions take an `AsyncSession` and leave transaction
boundaries to the caller, except the few named `*_tx` or documented otherwise.
Imports only `errors`; every other module sits below it in the flow.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

from service.errors import ArticleNotFoundError, DatabaseUnavailableError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Feed ids are UUIDs derived from the stable key in this namespace: never change it.
ARTICLE_ID_NAMESPACE = uuid.UUID("6f1c8d0e-5b7a-4f43-9a39-2f4c3a1d9e10")
# Identifies partnerpost's advisory locks among others on a shared PostgreSQL.
_LOCK_NAMESPACE = 0x5050


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes stored as UTC; SQLite would otherwise drop the offset."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; partnerpost stores aware ones")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
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
class Capabilities:
    """What the connected database can do; the one place dialects differ."""

    dialect: str
    skip_locked: bool
    advisory_locks: bool

    @classmethod
    def of(cls, engine: AsyncEngine) -> Capabilities:
        postgres = engine.dialect.name == "postgresql"
        return cls(dialect=engine.dialect.name, skip_locked=postgres, advisory_locks=postgres)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(database_url: str, **options: Any) -> AsyncEngine:
    """An engine for the URL; SQLite files get their folder, WAL mode and foreign keys."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, **options)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def check_connection(engine: AsyncEngine) -> None:
    """Raise `DatabaseUnavailableError` unless a trivial query succeeds."""
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (OperationalError, OSError) as exc:
        url = engine.url.render_as_string(hide_password=True)
        raise DatabaseUnavailableError(url, str(exc).splitlines()[0]) from exc


async def upgrade(engine: AsyncEngine) -> None:
    """Apply all Alembic migrations; replicas starting together migrate one at a time."""
    from alembic import command
    from alembic.config import Config

    def run(sync_connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = sync_connection
        command.upgrade(config, "head")

    await check_connection(engine)
    async with engine.begin() as connection:
        await _advisory_xact_lock(connection, "migrate")
        await connection.run_sync(run)


async def _advisory_xact_lock(connection: AsyncConnection, name: str) -> None:
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:name))"),
            {"ns": _LOCK_NAMESPACE, "name": name},
        )


@asynccontextmanager
async def exclusive(engine: AsyncEngine, name: str) -> AsyncIterator[bool]:
    """Hold a named lock across replicas; yields False when another process holds it.

    PostgreSQL uses a session-level advisory lock. SQLite serves a single host, where the
    caller's own in-process guard suffices, so it always yields True.
    """
    if not Capabilities.of(engine).advisory_locks:
        yield True
        return
    async with engine.connect() as connection:
        params = {"ns": _LOCK_NAMESPACE, "name": name}
        got = (
            await connection.execute(
                text("SELECT pg_try_advisory_lock(:ns, hashtext(:name))"), params
            )
        ).scalar_one()
        try:
            yield bool(got)
        finally:
            if got:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:ns, hashtext(:name))"), params
                )
            await connection.commit()


# --- articles -------------------------------------------------------------------------


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


class SaveOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


_EDITABLE = (
    "title",
    "teaser",
    "body",
    "place",
    "published_at",
    "image_caption",
    "image_url",
    "source_url",
)
_TRANSLITERATION = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})


def slugify(value: str, max_length: int = 80) -> str:
    """URL slug with German transliteration (ä → ae), which generic slugifiers get wrong."""
    value = value.lower().translate(_TRANSLITERATION)
    value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^a-z0-9]+", "-", value).strip("-")
    if len(value) > max_length:
        cut = value[: max_length + 1]
        value = cut.rsplit("-", 1)[0] if "-" in cut else cut[:max_length]
    return value or "artikel"


def article_guid(key: str) -> str:
    """The feed id of an article: derived from its stable key, so edits never change it."""
    return f"urn:uuid:{uuid.uuid5(ARTICLE_ID_NAMESPACE, key)}"


async def _find_same_article(session: AsyncSession, data: ArticleData) -> Article | None:
    """The stored article `data` describes: same key, or a title/teaser edit of one.

    An article with a new key but the same publication day and place as a stored one, and
    either the same title or the same teaser, is that article with one of the two edited.
    """
    found = await session.scalar(select(Article).where(Article.key == data.key))
    if found is not None:
        return found
    same_day = select(Article).where(
        Article.published_at == data.published_at, Article.place == data.place
    )
    for candidate in await session.scalars(same_day):
        if candidate.title == data.title or candidate.teaser == data.teaser:
            return candidate
    return None


async def _unique_slug(session: AsyncSession, title: str) -> str:
    base = slugify(title)
    taken = set(await session.scalars(select(Article.slug).where(Article.slug.like(f"{base}%"))))
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug


async def save_article(
    session: AsyncSession, data: ArticleData, now: datetime | None = None
) -> tuple[SaveOutcome, Article]:
    """Insert a new article or update the stored one it describes; `updated_at` moves only
    when something changed. Slug, key and guid are fixed at creation."""
    now = now or utcnow()
    article = await _find_same_article(session, data)
    if article is None:
        article = Article(
            key=data.key,
            guid=article_guid(data.key),
            slug=await _unique_slug(session, data.title),
            created_at=now,
            updated_at=now,
            **{name: getattr(data, name) for name in _EDITABLE},
        )
        article.topic_rows = [ArticleTopic(topic=t) for t in sorted(set(data.topics))]
        session.add(article)
        await session.flush()
        return SaveOutcome.CREATED, article
    changed = False
    for name in _EDITABLE:
        if getattr(article, name) != getattr(data, name):
            setattr(article, name, getattr(data, name))
            changed = True
    if sorted(set(data.topics)) != article.topics:
        article.topic_rows = [ArticleTopic(topic=t) for t in sorted(set(data.topics))]
        changed = True
    if not changed:
        return SaveOutcome.UNCHANGED, article
    article.updated_at = now
    await session.flush()
    return SaveOutcome.UPDATED, article


async def newest_articles(
    session: AsyncSession, limit: int, topic: str | None = None
) -> Sequence[Article]:
    """Newest first by publication date, then by insertion order."""
    query = select(Article).order_by(Article.published_at.desc(), Article.id.desc()).limit(limit)
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


async def count_articles(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Article)) or 0)


async def articles_version(session: AsyncSession) -> str:
    """A value that changes whenever an article is added, edited or removed."""
    row = (
        await session.execute(
            select(func.count(Article.id), func.max(Article.id), func.max(Article.updated_at))
        )
    ).one()
    count, max_id, max_updated = row
    return f"{count}:{max_id}:{max_updated}"


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

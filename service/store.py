"""The store: schema, engine, sessions and every query partnerpost makes.

Owns the tables (articles, their topics, site facts) and the only place where SQLite and
PostgreSQL differ (`Capabilities`). Functions take an `AsyncSession` and leave transaction
boundaries to the caller, except the few named `*_tx` or documented otherwise.
Imports only `errors`; every other module sits below it in the flow.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import uuid
from bisect import bisect_right
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    event,
    func,
    select,
    text,
    update,
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
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    SessionTransaction,
    mapped_column,
    relationship,
    selectinload,
)

from service import slugs
from service.clock import utcnow as utcnow  # re-exported: callers know it from here
from service.errors import ArticleNotFoundError, DatabaseUnavailableError
from service.slugs import slugify as slugify  # re-exported: callers know it from here

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Feed ids are UUIDs derived from the stable key in this namespace: never change it.
ARTICLE_ID_NAMESPACE = uuid.UUID("6f1c8d0e-5b7a-4f43-9a39-2f4c3a1d9e10")
# Identifies partnerpost's advisory locks among others on a shared PostgreSQL.
_LOCK_NAMESPACE = 0x5050


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
    """The declarative base of every table; Alembic migrations create the tables."""


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
    # The source (`sources.id`) that brought it; None when imported otherwise, or after its
    # source was removed.
    source_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    # False for a backfill imported with --no-notify: feeds show it, no digest carries it.
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    # Its place in commit order, given once it is committed (see `publish_committed`).
    publication_seq: Mapped[int | None] = mapped_column(BigInteger, index=True, unique=True)
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


class Frequency(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class AddressStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


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


class Subscriber(Base):
    """A municipality; it receives digests at its contact addresses."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
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

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
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


class Delivery(Base):
    """The ledger: one row per (address, digest period), the only record of what was sent."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("address_id", "period_key"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    address_id: Mapped[int] = mapped_column(ForeignKey("addresses.id", ondelete="CASCADE"))
    period_key: Mapped[str] = mapped_column(String(80))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts whose end got no reply in time (each may have been delivered).
    uncertain_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The digest carries the articles with after_article_id < publication_seq <=
    # upto_article_id (publication sequences; the names are from when they were ids).
    after_article_id: Mapped[int] = mapped_column(BigInteger)
    upto_article_id: Mapped[int] = mapped_column(BigInteger)
    article_count: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(String(250))
    last_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConfirmationRequest(Base):
    """A subscription request, kept to limit confirmation mails per address and client."""

    __tablename__ = "confirmation_requests"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    client: Mapped[str] = mapped_column(String(100), index=True)
    mailed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ConfirmationMail(Base):
    """The queue of confirmation mails: one row per mail to send, with the ledger's
    statuses and retry bookkeeping; the mail itself is composed when it is sent."""

    __tablename__ = "confirmation_mails"
    __table_args__ = (Index("ix_confirmation_mails_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    address_id: Mapped[int] = mapped_column(
        ForeignKey("addresses.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    uncertain_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(250))
    last_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Consent(Base):
    """The record of one consent: asked for when, with which form text, from where (as a
    keyed hash), and whether and when the person confirmed it. `nonce` is the one-time id
    its confirmation link carries; a used or voided record never confirms again."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
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


@dataclass(frozen=True)
class Capabilities:
    """What the connected database can do; the one place dialects differ."""

    dialect: str
    skip_locked: bool
    advisory_locks: bool

    @classmethod
    def of(cls, engine: AsyncEngine) -> Capabilities:
        return cls._for(engine.dialect.name)

    @classmethod
    def of_session(cls, session: AsyncSession) -> Capabilities:
        return cls._for(session.get_bind().dialect.name)

    @classmethod
    def _for(cls, dialect: str) -> Capabilities:
        postgres = dialect == "postgresql"
        return cls(dialect=dialect, skip_locked=postgres, advisory_locks=postgres)


# How long a SQLite connection waits for another process's write lock before it fails
# with "database is locked": concurrent processes on one file wait, they do not die.
# The URL's `?timeout=SECONDS` (the driver's own parameter) overrides it.
SQLITE_BUSY_TIMEOUT_SECONDS = 60.0
# Execution option naming how a SQLite transaction begins: DEFERRED (reads) or IMMEDIATE.
_SQLITE_BEGIN = "partnerpost_sqlite_begin"


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy's "begin" event below emits BEGIN itself: the driver's implicit BEGIN
        # comes only before the first write, so reads before it ran outside the transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # First, so that even switching the journal mode waits for a busy file.
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


def _sqlite_begin(connection: Any) -> None:
    """BEGIN IMMEDIATE for write transactions, BEGIN for the rest.

    A deferred transaction that has read and then writes cannot wait for the write lock:
    when another process committed meanwhile SQLite fails at once with "database is
    locked" (its snapshot is stale). Taking the write lock at BEGIN makes the busy timeout
    apply, so concurrent writers queue up instead.
    """
    mode = connection.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def create_engine(database_url: str, **options: Any) -> AsyncEngine:
    """An engine for the URL; SQLite files get their folder, WAL mode, foreign keys, a busy
    timeout, and write transactions that take the write lock when they begin."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        seconds = float(str(url.query.get("timeout", SQLITE_BUSY_TIMEOUT_SECONDS)))
        engine = create_async_engine(url, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(int(seconds * 1000)))
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_pre_ping=True, **options)


class _StoreSession(Session):
    """A session whose explicit transactions (`session.begin()`, the house style for every
    write) begin IMMEDIATE on SQLite; sessions that only read begin deferred."""

    def begin(self, nested: bool = False) -> SessionTransaction:
        transaction = super().begin(nested)
        if not nested and self.bind is not None and self.bind.dialect.name == "sqlite":
            # Execution options only reach the connection when it is procured, so take it now.
            self.connection(execution_options={_SQLITE_BEGIN: "IMMEDIATE"})
        return transaction


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=_StoreSession)


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
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))

    def up_to_date(sync_connection: Any) -> bool:
        current = MigrationContext.configure(sync_connection).get_current_heads()
        return set(current) == set(ScriptDirectory.from_config(config).get_heads())

    def run(sync_connection: Any) -> None:
        config.attributes["connection"] = sync_connection
        command.upgrade(config, "head")

    await check_connection(engine)
    # Every command starts here: a store already up to date needs no lock, so processes
    # started together do not queue for the write lock only to find nothing to do.
    async with engine.connect() as connection:
        if await connection.run_sync(up_to_date):
            return
    async with engine.connect() as connection:
        # On SQLite the write lock serializes processes starting together, as the
        # advisory lock does on PostgreSQL.
        await connection.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
        async with connection.begin():
            await _advisory_xact_lock(connection, "migrate")
            await connection.run_sync(run)


async def _advisory_xact_lock(connection: AsyncConnection, name: str) -> None:
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:name))"),
            {"ns": _LOCK_NAMESPACE, "name": name},
        )


_LOCK_POLL_SECONDS = 0.05


@asynccontextmanager
async def exclusive(engine: AsyncEngine, name: str, *, wait: bool = False) -> AsyncIterator[bool]:
    """Hold a named lock across processes; yields False when another process holds it,
    or, with `wait`, waits for it and yields True.

    PostgreSQL uses a session-level advisory lock, across hosts. SQLite serves one host:
    an exclusive `flock` on a lock file beside the database file, which also excludes a
    second holder in the same process (each holder opens the file anew).
    """
    if Capabilities.of(engine).advisory_locks:
        async with _advisory_lock(engine, name, wait) as got:
            yield got
        return
    database = engine.url.database
    if not database or database == ":memory:":  # one process by construction
        yield True
        return
    async with _file_lock(Path(f"{database}.{name}.lock"), wait) as got:
        yield got


@asynccontextmanager
async def _advisory_lock(engine: AsyncEngine, name: str, wait: bool) -> AsyncIterator[bool]:
    async with engine.connect() as connection:
        params = {"ns": _LOCK_NAMESPACE, "name": name}
        take = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
        result = await connection.execute(text(f"SELECT {take}(:ns, hashtext(:name))"), params)
        got = True if wait else bool(result.scalar_one())
        try:
            yield got
        finally:
            if got:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:ns, hashtext(:name))"), params
                )
            await connection.commit()


@asynccontextmanager
async def _file_lock(path: Path, wait: bool) -> AsyncIterator[bool]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        got = _try_flock(descriptor)
        while wait and not got:
            await asyncio.sleep(_LOCK_POLL_SECONDS)  # polled: a blocking flock is not cancellable
            got = _try_flock(descriptor)
        try:
            yield got
        finally:
            if got:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _try_flock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


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
    notify: bool = True


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


async def _unique_slug(
    session: AsyncSession, title: str, model: type[Article] | type[Subscriber]
) -> str:
    base = slugify(title)
    taken = set(await session.scalars(select(model.slug).where(model.slug.like(f"{base}%"))))
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
            slug=await _unique_slug(session, data.title, Article),
            notify=data.notify,
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
    edited or removed, a municipality joins or leaves, the listing heading changes."""
    articles = (
        await session.execute(
            select(func.count(Article.id), func.max(Article.id), func.max(Article.updated_at))
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


# --- subscribers ----------------------------------------------------------------------

_MUNICIPALITY_PREFIXES = re.compile(
    r"^(?:(?:Landeshauptstadt|Hansestadt|Universitätsstadt|Lutherstadt|Kreisstadt|"
    r"Große Kreisstadt|Stadt|Gemeinde|Markt|Landkreis|Kreis|Amt|Samtgemeinde|"
    r"Verbandsgemeinde)\s+)+",
    re.IGNORECASE,
)


def place_names(subscriber: Subscriber) -> list[str]:
    """The names an article would use for the municipality and its partner."""
    names = [_MUNICIPALITY_PREFIXES.sub("", subscriber.name).strip()]
    if subscriber.partner:
        names.append(_MUNICIPALITY_PREFIXES.sub("", subscriber.partner).strip())
    return [n for n in names if len(n) >= 3]


def mention_score(article: Article, names: Sequence[str]) -> int:
    """How prominently an article mentions these places: 0 not at all; a title counts
    more than the teaser, the teaser more than the body. Image captions do not count: a
    photo taken in Leipzig does not make an article news about Leipzig."""
    score = 0
    for name in names:
        pattern = re.compile(rf"(?<![\w-]){re.escape(name)}", re.IGNORECASE)
        if pattern.search(article.title):
            score += 8
        if pattern.search(article.teaser):
            score += 2
        if pattern.search(article.body or ""):
            score += 1
    return score


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
        slug=await _unique_slug(session, name, Subscriber),
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


async def enqueue_confirmation(session: AsyncSession, address_id: int, now: datetime) -> bool:
    """Queue a confirmation mail for the address unless one is still waiting to be sent
    (that one is composed when sent, so it carries the newest link); True if a row was
    added. A mail already being sent was composed with an older link: it does not count."""
    waiting = await session.scalar(
        select(ConfirmationMail.id).where(
            ConfirmationMail.address_id == address_id,
            ConfirmationMail.status == DeliveryStatus.PENDING,
        )
    )
    if waiting is not None:
        return False
    session.add(
        ConfirmationMail(
            address_id=address_id,
            status=str(DeliveryStatus.PENDING),
            attempts=0,
            uncertain_attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    await session.flush()
    return True


async def claim_confirmations(
    session: AsyncSession, worker: str, now: datetime, limit: int, lease: timedelta
) -> list[int]:
    """Claim due confirmation mails, as `claim_deliveries` claims ledger rows."""
    return await _claim(session, ConfirmationMail, worker, now, limit, lease)


async def confirmations_with_addresses(
    session: AsyncSession, ids: Sequence[int]
) -> list[tuple[ConfirmationMail, Address]]:
    rows = await session.execute(
        select(ConfirmationMail, Address)
        .join(Address, Address.id == ConfirmationMail.address_id)
        .where(ConfirmationMail.id.in_(ids))
        .order_by(ConfirmationMail.id)
    )
    return [(row[0], row[1]) for row in rows.all()]


async def finish_confirmation(
    session: AsyncSession,
    mail_id: int,
    worker: str,
    *,
    status: DeliveryStatus,
    now: datetime,
    reply: str | None = None,
    message_id: str | None = None,
    next_attempt_at: datetime | None = None,
    count_attempt: bool = True,
    uncertain: bool = False,
) -> bool:
    """Record the outcome of a claimed confirmation mail; False if the claim was lost."""
    return await _finish(
        session,
        ConfirmationMail,
        mail_id,
        worker,
        status=status,
        now=now,
        reply=reply,
        message_id=message_id,
        next_attempt_at=next_attempt_at,
        count_attempt=count_attempt,
        uncertain=uncertain,
    )


async def release_confirmation_claims(session: AsyncSession, workers: Sequence[str]) -> int:
    return await _release(session, ConfirmationMail, workers)


# --- consent --------------------------------------------------------------------------


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


async def deliveries_of(session: AsyncSession, address_id: int) -> Sequence[Delivery]:
    return (
        await session.scalars(
            select(Delivery).where(Delivery.address_id == address_id).order_by(Delivery.id)
        )
    ).all()


async def requests_for(session: AsyncSession, email: str) -> Sequence[ConfirmationRequest]:
    return (
        await session.scalars(
            select(ConfirmationRequest)
            .where(ConfirmationRequest.email == email.lower())
            .order_by(ConfirmationRequest.id)
        )
    ).all()


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


async def erase_address(session: AsyncSession, address: Address) -> dict[str, int]:
    """Erase an address with its consents, ledger rows and requests, keeping only anonymous
    counts (deliveries per period and outcome, erasures); a municipality left without any
    address goes too. Returns the counts added."""
    counts: dict[str, int] = {"erasures": 1}
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


async def counts_by_status(
    session: AsyncSession, model: type[Address] | type[Delivery]
) -> dict[str, int]:
    rows = await session.execute(select(model.status, func.count()).group_by(model.status))
    return {status: int(count) for status, count in rows.all()}


# --- the delivery ledger --------------------------------------------------------------


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
    await _advisory_xact_lock(await session.connection(), "publish")
    unnumbered = list(
        await session.scalars(
            select(Article.id).where(Article.publication_seq.is_(None)).order_by(Article.id)
        )
    )
    if not unnumbered:
        return 0
    base = await _newest_seq(session)
    table = cast(Table, Article.__table__)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("article_id"))
        .values(publication_seq=bindparam("seq")),
        [{"article_id": id_, "seq": base + n} for n, id_ in enumerate(unnumbered, start=1)],
    )
    return len(unnumbered)


async def _newest_seq(session: AsyncSession) -> int:
    query = select(func.coalesce(func.max(Article.publication_seq), 0))
    return int(await session.scalar(query) or 0)


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
    upto = await _newest_seq(session)
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
    upto = await _newest_seq(session)
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
    statement: Any
    if session.get_bind().dialect.name == "postgresql":
        statement = postgresql.insert(Delivery).on_conflict_do_nothing(index_elements=keys)
    else:
        statement = sqlite.insert(Delivery).on_conflict_do_nothing(index_elements=keys)
    result = await session.execute(statement.returning(Delivery.id), rows)
    return len(result.all())


async def claim_deliveries(
    session: AsyncSession, worker: str, now: datetime, limit: int, lease: timedelta
) -> list[int]:
    """Claim up to `limit` due rows for `worker`: pending ones whose time has come, then
    claims whose lease ran out. Two workers never get the same row: PostgreSQL skips rows
    another transaction has locked; SQLite runs each claiming statement as one write.

    Each kind is claimed by its own statement so that the pending ones come straight off
    the (status, next_attempt_at) index instead of a scan of the whole ledger.
    """
    return await _claim(session, Delivery, worker, now, limit, lease)


async def _claim(
    session: AsyncSession,
    model: type[Delivery] | type[ConfirmationMail],
    worker: str,
    now: datetime,
    limit: int,
    lease: timedelta,
) -> list[int]:
    skip_locked = Capabilities.of_session(session).skip_locked
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
    claimed: list[int] = []
    for due, order in kinds:
        if len(claimed) >= limit:
            break
        chosen = select(model.id).where(due).order_by(order).limit(limit - len(claimed))
        if skip_locked:
            # Lock first, then update what was locked: inside `IN (...)` PostgreSQL may run
            # a LIMIT … SKIP LOCKED subquery more than once and claim more than the limit.
            ids = list(await session.scalars(chosen.with_for_update(skip_locked=True)))
            if not ids:
                continue
            target: Any = model.id.in_(ids)
        else:
            target = model.id.in_(chosen.scalar_subquery())
        result = await session.execute(
            update(model)
            .where(target, due)
            .values(status=DeliveryStatus.SENDING, claimed_by=worker, claimed_until=now + lease)
            .returning(model.id)
            .execution_options(synchronize_session=False)
        )
        claimed += [row[0] for row in result.all()]
    return sorted(claimed)


async def release_claims(session: AsyncSession, workers: Sequence[str]) -> int:
    """Hand rows claimed but not finished by these workers back to the queue."""
    return await _release(session, Delivery, workers)


async def _release(
    session: AsyncSession,
    model: type[Delivery] | type[ConfirmationMail],
    workers: Sequence[str],
) -> int:
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
    rows = await session.execute(
        select(Delivery, Address)
        .join(Address, Address.id == Delivery.address_id)
        .where(Delivery.id.in_(delivery_ids))
        .order_by(Delivery.id)
    )
    return [(row[0], row[1]) for row in rows.all()]


async def due_deliveries(session: AsyncSession, now: datetime) -> list[tuple[Delivery, Address]]:
    rows = await session.execute(
        select(Delivery, Address)
        .join(Address, Address.id == Delivery.address_id)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.id)
    )
    return [(row[0], row[1]) for row in rows.all()]


async def digest_articles(
    session: AsyncSession, after: int, upto: int, topics: Sequence[str] = ()
) -> Sequence[Article]:
    """The articles a digest row carries (publication numbers after < n <= upto), newest
    publication date first."""
    query = (
        select(Article)
        .where(
            Article.publication_seq > after,
            Article.publication_seq <= upto,
            Article.notify.is_(True),
        )
        .order_by(Article.published_at.desc(), Article.id.desc())
    )
    if topics:
        query = query.where(
            Article.id.in_(select(ArticleTopic.article_id).where(ArticleTopic.topic.in_(topics)))
        )
    return (await session.scalars(query)).all()


async def finish_delivery(
    session: AsyncSession,
    delivery_id: int,
    worker: str,
    *,
    status: DeliveryStatus,
    now: datetime,
    reply: str | None = None,
    message_id: str | None = None,
    article_count: int | None = None,
    next_attempt_at: datetime | None = None,
    count_attempt: bool = True,
    uncertain: bool = False,
) -> bool:
    """Record the outcome of a claimed row; False if the claim was lost meanwhile."""
    return await _finish(
        session,
        Delivery,
        delivery_id,
        worker,
        status=status,
        now=now,
        reply=reply,
        message_id=message_id,
        article_count=article_count,
        next_attempt_at=next_attempt_at,
        count_attempt=count_attempt,
        uncertain=uncertain,
    )


async def _finish(
    session: AsyncSession,
    model: type[Delivery] | type[ConfirmationMail],
    row_id: int,
    worker: str,
    *,
    status: DeliveryStatus,
    now: datetime,
    reply: str | None,
    message_id: str | None,
    next_attempt_at: datetime | None,
    count_attempt: bool,
    uncertain: bool,
    article_count: int | None = None,
) -> bool:
    # A Core statement on the table: once per message, the ORM's bulk-update bookkeeping
    # cost more than the statement itself.
    table = cast(Table, model.__table__)
    values: dict[str, Any] = {
        "status": str(status),
        "claimed_by": None,
        "claimed_until": None,
        "last_reply": reply,
    }
    if count_attempt:
        values["attempts"] = table.c.attempts + 1
    if uncertain:
        values["uncertain_attempts"] = table.c.uncertain_attempts + 1
    if message_id is not None:
        values["message_id"] = message_id
    if article_count is not None:
        values["article_count"] = article_count
    if status is DeliveryStatus.SENT:
        values["sent_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
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

"""The store's foundation: the declarative base, engine, sessions, migrations and locks.

Owns no table. Holds the column types every table uses (`UTCDateTime`, `BigId`), the one
place where SQLite and PostgreSQL differ (`Capabilities`, the SQLite pragmas and IMMEDIATE
write transactions), `upgrade` (Alembic, from `service/migrations`) and the locks across
processes (`exclusive`, the advisory transaction lock). Imports only `errors` and `slugs`.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Dialect,
    Integer,
    Select,
    String,
    TypeDecorator,
    cast,
    event,
    func,
    select,
    text,
    type_coerce,
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
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Session, SessionTransaction

from service.errors import DatabaseUnavailableError
from service.slugs import slugify

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"
# How Alembic compares a migrated database with the models (`alembic revision
# --autogenerate`, and the test that they agree). Types are compared: a model's column type
# and the migrated one must agree (on SQLite by the declared type, which is what it
# reflects). Server defaults are not: models give defaults in Python (`default=`), while a
# migration adding a NOT NULL column to a table with rows must give those rows a server
# default (`articles.notify`, `deliveries.uncertain_attempts`); that difference is
# intended, and default expressions reflect differently per dialect anyway.
SCHEMA_COMPARISON: dict[str, Any] = {"compare_type": True, "compare_server_default": False}
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
BigId = BigInteger().with_variant(Integer(), "sqlite")


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


def time_sums(column: Any, dialect: str) -> list[Any]:
    """Aggregates that move whenever any row's `column` (a `UTCDateTime`) changes, whether
    to a later or an earlier time: exact sums, not floats. A `max()` misses an edit stamped
    before the newest one (a replica whose clock is behind, a transaction that read the
    clock long before it committed). PostgreSQL sums the epoch as exact numeric; SQLite
    (which stores `YYYY-MM-DD HH:MM:SS.ffffff`) sums whole seconds and microseconds apart,
    each within 64 bits."""
    if dialect == "postgresql":
        return [func.sum(func.extract("epoch", column))]
    text = type_coerce(column, String())
    return [
        func.sum(cast(func.strftime("%s", text), Integer)),
        func.sum(cast(func.substr(text, 21, 6), Integer)),
    ]


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
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a committed
        # transaction survives a kill of the process (the failure the delivery ledger
        # guards against), only an OS crash or power loss may lose the newest ones.
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
            await advisory_xact_lock(connection, "migrate")
            await connection.run_sync(run)


async def advisory_xact_lock(connection: AsyncConnection, name: str) -> None:
    """Hold a named PostgreSQL lock until the transaction ends; on SQLite the write lock
    the transaction took at BEGIN serializes already."""
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


async def unique_slug(session: AsyncSession, column: InstrumentedAttribute[str], title: str) -> str:
    """A slug of `title` not yet taken in `column`: the plain one, else `-2`, `-3`, ..."""
    base = slugify(title)
    taken = set(await session.scalars(select(column).where(column.like(f"{base}%"))))
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug


async def claim_chosen(
    session: AsyncSession,
    model: Any,
    chosen: Select[int],
    still_wanted: ColumnElement[bool],
    values: dict[str, Any],
) -> list[int]:
    """Set `values` on the rows `chosen` selects (ids) that are `still_wanted`; their ids.

    The one claiming statement of every queue: PostgreSQL locks first, skipping rows
    another transaction holds, then updates what was locked (inside `IN (...)` it may run
    a LIMIT … SKIP LOCKED subquery more than once and claim more than the limit); SQLite
    runs it as one write.
    """
    if Capabilities.of_session(session).skip_locked:
        ids = list(await session.scalars(chosen.with_for_update(skip_locked=True)))
        if not ids:
            return []
        target: Any = model.id.in_(ids)
    else:
        target = model.id.in_(chosen.scalar_subquery())
    result = await session.execute(
        update(model)
        .where(target, still_wanted)
        .values(**values)
        .returning(model.id)
        .execution_options(synchronize_session=False)
    )
    return [row[0] for row in result.all()]

"""What the two mail queues share: the delivery ledger (`ledger`) and the confirmation
mails (`confirmation_queue`).

Owns no table: the columns both queue tables have (`QueuedMail`), their statuses, the
record of one attempt's outcome (`Outcome`), and claiming (with a lease), releasing and
finishing rows. Imports `base` and `subscribers`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Dialect,
    Integer,
    String,
    Table,
    Text,
    and_,
    inspect,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from service.store.base import BigId, UTCDateTime, claim_chosen
from service.store.subscribers import Address


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


class QueuedMail:
    """The columns of a queued mail: its status, retry bookkeeping, claim and reply."""

    if TYPE_CHECKING:  # each table declares its own (indexed or not)
        address_id: Mapped[int]

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts whose end got no reply in time (each may have been delivered).
    uncertain_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(250))
    last_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the row was last tried (not set by an outcome that is no attempt, such as empty).
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# What run reports count an outcome as, by the status it leaves its row in.
_LABELS = {
    DeliveryStatus.SENT: "sent",
    DeliveryStatus.PENDING: "retrying",
    DeliveryStatus.FAILED: "failed",
    DeliveryStatus.UNCERTAIN: "uncertain",
    DeliveryStatus.EMPTY: "skipped",
    DeliveryStatus.SUPERSEDED: "skipped",
}


@dataclass(frozen=True)
class Outcome:
    """The outcome of one attempt at a claimed row: the state it leaves the row in.

    Decided once (`service.outcomes`), recorded by `finish_delivery` or
    `finish_confirmation`.
    """

    status: DeliveryStatus
    reply: str | None = None
    next_attempt_at: datetime | None = None  # when a row left pending is tried again
    message_id: str | None = None
    article_count: int | None = None  # digests only
    counts_attempt: bool = True  # False for a row skipped without trying to send it
    uncertain: bool = False  # this attempt may have delivered the message
    # A refusal that counts toward marking the address bounced.
    permanent_failure: bool = False

    @property
    def label(self) -> str:
        """What run reports count it as: sent, retrying, failed, uncertain or skipped."""
        return _LABELS[self.status]


Row = TypeVar("Row", bound=QueuedMail)


async def rows_with_addresses(
    session: AsyncSession, model: type[Row], *where: ColumnElement[bool]
) -> list[tuple[Row, Address]]:
    """The rows of a queue that match `where`, each with its address, in id order."""
    rows = await session.execute(
        select(model, Address)
        .join(Address, Address.id == model.address_id)
        .where(*where)
        .order_by(model.id)
    )
    return [(row[0], row[1]) for row in rows.all()]


async def claim_rows(
    session: AsyncSession,
    model: type[QueuedMail],
    worker: str,
    now: datetime,
    limit: int,
    lease: timedelta,
) -> list[int]:
    """Claim up to `limit` due rows of a queue for `worker`: pending ones whose time has
    come, then claims whose lease ran out. Two workers never get the same row: PostgreSQL
    skips rows another transaction has locked; SQLite runs each claiming statement as one
    write.

    Each kind is claimed by its own statement so that the pending ones come straight off
    the (status, next_attempt_at) index instead of a scan of the whole table.
    """
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
    claim = {"status": DeliveryStatus.SENDING, "claimed_by": worker, "claimed_until": now + lease}
    claimed: list[int] = []
    for due, order in kinds:
        if len(claimed) >= limit:
            break
        chosen = select(model.id).where(due).order_by(order).limit(limit - len(claimed))
        claimed += await claim_chosen(session, model, chosen, due, claim)
    return sorted(claimed)


async def release_rows(
    session: AsyncSession, model: type[QueuedMail], workers: Sequence[str]
) -> int:
    """Hand rows claimed but not finished by these workers back to the queue."""
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


async def finish_row(
    session: AsyncSession,
    model: type[QueuedMail],
    row_id: int,
    worker: str,
    outcome: Outcome,
    now: datetime,
) -> bool:
    """Record the outcome of a claimed row; False if the claim was lost meanwhile."""
    # A Core statement on the table: once per message, the ORM's bulk-update bookkeeping
    # cost more than the statement itself.
    table = cast(Table, inspect(model).local_table)
    values: dict[str, Any] = {
        "status": str(outcome.status),
        "claimed_by": None,
        "claimed_until": None,
        "last_reply": outcome.reply,
    }
    if outcome.counts_attempt:
        values["attempts"] = table.c.attempts + 1
        values["last_attempt_at"] = now
    if outcome.uncertain:
        values["uncertain_attempts"] = table.c.uncertain_attempts + 1
    if outcome.message_id is not None:
        values["message_id"] = outcome.message_id
    if outcome.article_count is not None:
        values["article_count"] = outcome.article_count
    if outcome.status is DeliveryStatus.SENT:
        values["sent_at"] = now
    if outcome.next_attempt_at is not None:
        values["next_attempt_at"] = outcome.next_attempt_at
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


class OutcomeRecorder:
    """Records the outcomes of one worker's claimed rows of a queue, one message at a time,
    as `finish_row` does but cheaply: over one connection held for a batch, each outcome is
    one statement that commits by itself (a single-statement transaction), with the same
    text every time, so the driver prepares it once.

    That makes the record of a sent message one round trip to the database instead of a
    session, a BEGIN, the statement and a COMMIT; it stays one durable record per message,
    as the crash guarantee needs. On SQLite (WAL, synchronous=NORMAL, see `base`) a commit
    is durable across a kill of the process, the failure the ledger guards against;
    PostgreSQL's is durable outright.

    On a SQLite file the statement runs on a connection of its own in the event loop's
    thread (`direct`), which never waits for a lock: a commit there takes some tens of
    microseconds, while a hop to the driver's thread waited for the interpreter lock as long
    as the loop was busy composing the next message, and the next message's data waits for
    this record. Only when another connection holds the write lock does the statement go
    through the driver, whose thread waits for it.
    """

    def __init__(
        self,
        driver: Any,
        dialect: Dialect,
        table: Table,
        worker: str,
        direct: sqlite3.Connection | None = None,
    ) -> None:
        self._driver = driver
        self._direct = direct
        self._worker = worker
        self._postgres = dialect.name == "postgresql"
        # A moment as the column type stores it (on SQLite naive UTC text).
        processor = table.c.sent_at.type.bind_processor(dialect)
        self._moment: Callable[[datetime], Any] = processor or (lambda value: value)
        marks = iter(range(1, 100))

        def mark() -> str:
            return f"${next(marks)}" if self._postgres else "?"

        self._articles = "article_count" in table.c
        assignments = [
            f"status = {mark()}",
            "claimed_by = NULL",
            "claimed_until = NULL",
            f"last_reply = {mark()}",
            f"attempts = attempts + {mark()}",
            f"last_attempt_at = COALESCE({mark()}, last_attempt_at)",
            f"uncertain_attempts = uncertain_attempts + {mark()}",
            f"message_id = COALESCE({mark()}, message_id)",
            f"sent_at = COALESCE({mark()}, sent_at)",
            f"next_attempt_at = COALESCE({mark()}, next_attempt_at)",
        ]
        if self._articles:
            assignments.append(f"article_count = COALESCE({mark()}, article_count)")
        self._statement = (
            f"UPDATE {table.name} SET {', '.join(assignments)} WHERE id = {mark()} "
            f"AND claimed_by = {mark()} AND status = '{DeliveryStatus.SENDING}' RETURNING id"
        )

    async def finish(self, row_id: int, outcome: Outcome, now: datetime) -> bool:
        """Record the outcome of a claimed row; False if the claim was lost meanwhile."""
        sent = outcome.status is DeliveryStatus.SENT
        parameters: list[Any] = [
            str(outcome.status),
            outcome.reply,
            1 if outcome.counts_attempt else 0,
            self._moment(now) if outcome.counts_attempt else None,
            1 if outcome.uncertain else 0,
            outcome.message_id,
            self._moment(now) if sent else None,
            None if outcome.next_attempt_at is None else self._moment(outcome.next_attempt_at),
        ]
        if self._articles:
            parameters.append(outcome.article_count)
        parameters += [row_id, self._worker]
        if self._postgres:
            return await self._driver.fetchval(self._statement, *parameters) is not None
        if self._direct is not None:
            try:
                return bool(self._direct.execute(self._statement, parameters).fetchall())
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                    raise
        return bool(await self._driver.execute_fetchall(self._statement, parameters))


@asynccontextmanager
async def outcome_recorder(
    sessions: async_sessionmaker[AsyncSession], model: type[QueuedMail], worker: str
) -> AsyncIterator[OutcomeRecorder]:
    """An `OutcomeRecorder` on a connection of its own, given back when done."""
    async with sessions() as session:
        engine = session.bind
    assert isinstance(engine, AsyncEngine), "sessions bound to an engine"
    async with engine.connect() as connection:
        # The driver's own connection, outside any transaction: SQLAlchemy begins none
        # until it executes something itself, so each statement commits by itself.
        raw = await connection.get_raw_connection()
        table = cast(Table, inspect(model).local_table)
        with _direct_sqlite(engine) as direct:
            yield OutcomeRecorder(raw.driver_connection, engine.dialect, table, worker, direct)


@contextmanager
def _direct_sqlite(engine: AsyncEngine) -> Iterator[sqlite3.Connection | None]:
    """A connection to the engine's SQLite file in this thread, each statement committed
    by itself, failing at once where another connection holds the write lock (see
    `OutcomeRecorder`); None for any other store."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        yield None
        return
    if url.query.get("uri") or url.database.startswith("file:"):
        yield None
        return
    direct = sqlite3.connect(url.database, isolation_level=None)
    try:
        direct.execute("PRAGMA busy_timeout=0")
        direct.execute("PRAGMA foreign_keys=ON")
        direct.execute("PRAGMA synchronous=NORMAL")  # as `base` sets it: see there
        # Checkpoints (which sync the file) are left to the engine's connections, which
        # run them in the driver's thread, not in the event loop.
        direct.execute("PRAGMA wal_autocheckpoint=0")
        yield direct
    finally:
        direct.close()

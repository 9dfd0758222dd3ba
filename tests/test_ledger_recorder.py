"""The ledger's cheap record of an outcome: one autocommitted statement per message over a
held connection, the same row as `finish_delivery` leaves, and committed before the next
message's data reaches the relay (one message per connection in doubt at most)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta

from sqlalchemy import func, select, text

from service import mailer, outcomes, store

from .helpers import (
    RecordingHandler,
    import_demo,
    next_monday_8am,
    run_digests,
    sqlite_only,
    start_relay,
    subscribe,
    with_smtp,
)

LEASE = timedelta(minutes=5)


async def _claimed(sessions, count: int, worker: str) -> list[int]:
    """`count` addresses with a planned row each, claimed by `worker`."""
    await import_demo(sessions)
    await subscribe(sessions, *(f"stelle{n}@gemeinde.example" for n in range(count)))
    now = store.utcnow()
    period = store.Period(store.Frequency.WEEKLY, now - timedelta(days=7), now)
    async with sessions() as session, session.begin():
        await store.plan_period(session, period, now)
    async with sessions() as session, session.begin():
        return await store.claim_deliveries(session, worker, now, count, LEASE)


async def _rows(sessions, ids: list[int]) -> list[store.Delivery]:
    async with sessions() as session:
        found = await session.scalars(
            select(store.Delivery).where(store.Delivery.id.in_(ids)).order_by(store.Delivery.id)
        )
        return list(found)


async def test_recorded_outcomes_leave_the_rows_finish_delivery_leaves(sessions, settings):
    fast, slow = await _claimed(sessions, 2, "w1")
    now = store.utcnow()
    sent = outcomes.sent("250 OK", "<m@partnerpost.example.org>", article_count=7)
    busy = mailer.TemporarySendError("stelle1@gemeinde.example", 451, "try again later")
    retry = outcomes.after_error(settings, busy, attempts=0, uncertain_attempts=0, now=now)

    async with store.delivery_recorder(sessions, "w1") as recorder:
        assert await recorder.finish(fast, sent, now)
        assert await recorder.finish(slow, retry, now)
    recorded = await _rows(sessions, [fast, slow])
    # The same outcomes through the session path, on rows claimed alike.
    again = await _claimed_again(sessions, [fast, slow], "w2")
    async with sessions() as session, session.begin():
        await store.finish_delivery(session, again[0], "w2", sent, now)
        await store.finish_delivery(session, again[1], "w2", retry, now)
    finished = await _rows(sessions, again)

    columns = ["status", "attempts", "uncertain_attempts", "claimed_by"]
    columns += ["claimed_until", "message_id", "last_reply", "sent_at", "last_attempt_at"]
    columns += ["article_count"]
    for mine, theirs in zip(recorded, finished, strict=True):
        assert {c: getattr(mine, c) for c in columns} == {
            c: getattr(theirs, c) if c != "attempts" else getattr(theirs, c) - 1 for c in columns
        }
    assert recorded[0].status == "sent" and recorded[0].sent_at == now
    assert recorded[1].status == "pending" and recorded[1].sent_at is None
    assert recorded[1].next_attempt_at == finished[1].next_attempt_at == retry.next_attempt_at


async def _claimed_again(sessions, ids: list[int], worker: str) -> list[int]:
    """The rows back to pending with the attempts they have, and claimed by `worker`."""
    async with sessions() as session, session.begin():
        for row in await session.scalars(select(store.Delivery).where(store.Delivery.id.in_(ids))):
            row.status, row.sent_at, row.message_id = "pending", None, None
            row.article_count, row.last_reply, row.last_attempt_at = None, None, None
            row.next_attempt_at = store.utcnow() - timedelta(seconds=1)
    async with sessions() as session, session.begin():
        return await store.claim_deliveries(session, worker, store.utcnow(), len(ids), LEASE)


async def test_a_lost_claim_is_not_recorded(sessions):
    (row,) = await _claimed(sessions, 1, "w1")
    async with sessions() as session, session.begin():
        await store.release_claims(session, ["w1"])

    async with store.delivery_recorder(sessions, "w1") as recorder:
        recorded = await recorder.finish(row, outcomes.sent("250", "<m@x>"), store.utcnow())

    assert not recorded
    assert (await _rows(sessions, [row]))[0].status == "pending"


@sqlite_only
async def test_a_record_waits_for_a_lock_held_elsewhere_without_stopping_the_event_loop(
    sessions, engine
):
    (row,) = await _claimed(sessions, 1, "w1")
    other = sqlite3.connect(engine.url.database, isolation_level=None)  # another process's
    other.execute("BEGIN IMMEDIATE")
    try:
        async with store.delivery_recorder(sessions, "w1") as recorder:
            recording = asyncio.ensure_future(
                recorder.finish(row, outcomes.sent("250", "<m@x>"), store.utcnow())
            )
            for _ in range(50):  # the loop runs on while the record waits
                await asyncio.sleep(0)
            assert not recording.done()
            other.execute("COMMIT")
            assert await recording
    finally:
        other.close()

    assert (await _rows(sessions, [row]))[0].status == "sent"


class _CheckingHandler(RecordingHandler):
    """Counts, as each message's data arrives, the digests the ledger has as sent; and
    before accepting the first one, makes the ledger slow to write for a moment (another
    transaction holds the lock a record needs), so a sender that did not wait for its
    record would hand over the next message before it."""

    def __init__(self, sessions) -> None:
        super().__init__([])
        self.sessions = sessions
        self.recorded_before: list[int] = []
        self.blocker: asyncio.Task[None] | None = None

    async def handle_DATA(self, server, session, envelope) -> str:
        async with self.sessions() as store_session:
            sent = select(func.count()).where(store.Delivery.status == "sent")
            self.recorded_before.append(int(await store_session.scalar(sent) or 0))
        if self.blocker is None:
            locked = asyncio.Event()
            self.blocker = asyncio.ensure_future(self._hold_write_lock(locked))
            await locked.wait()
        return await super().handle_DATA(server, session, envelope)

    async def _hold_write_lock(self, locked: asyncio.Event) -> None:
        async with self.sessions() as store_session, store_session.begin():  # SQLite: IMMEDIATE
            if store_session.get_bind().dialect.name == "postgresql":
                await store_session.execute(text("LOCK TABLE deliveries IN SHARE MODE"))
            locked.set()
            await asyncio.sleep(0.5)


async def test_each_message_reaches_the_relay_only_once_the_one_before_is_recorded(
    sessions, settings
):
    await import_demo(sessions)
    await subscribe(sessions, *(f"stelle{n}@gemeinde.example" for n in range(6)))
    handler = _CheckingHandler(sessions)
    server, port = await start_relay(handler)
    try:
        report = await run_digests(
            with_smtp(settings, "127.0.0.1", port, smtp_pool_size=1), sessions, next_monday_8am()
        )
    finally:
        server.close()
        await server.wait_closed()
        if handler.blocker is not None:
            await handler.blocker

    assert report.sent == 6
    # When message n arrives, messages 0 … n-1 are recorded: only the one being handed
    # over could be sent twice after a kill.
    assert handler.recorded_before == [0, 1, 2, 3, 4, 5]

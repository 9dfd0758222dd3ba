"""The delivery history and operators' retries, on both databases, with real digest runs
against the test SMTP server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from service import deliveries, digest, mailer, store
from service.clock import BERLIN

from .helpers import import_demo, next_monday_8am, run_digests, subscribe

WAIT_AN_HOUR = {"digest_retry_base_seconds": 3600, "smtp_pool_size": 1}


async def _rows(sessions) -> list[store.Delivery]:
    async with sessions() as session:
        return list(await session.scalars(store.select(store.Delivery).order_by(store.Delivery.id)))


async def _first_digests(settings, engine, sessions, *emails: str):
    """Subscribe these addresses (weekly) and run next Monday's digests: (that moment, the
    report, the ledger's rows)."""
    await import_demo(sessions)
    for email in emails:
        await subscribe(sessions, email, name=f"Stadt {email.split('@')[1]}")
    at = next_monday_8am()
    report = await run_digests(settings, sessions, at)
    return at, report, await _rows(sessions)


async def _retry(sessions, ids, now=None) -> deliveries.RetryReport:
    async with sessions() as session, session.begin():
        return await deliveries.retry_deliveries(session, ids, now or store.utcnow())


async def _retry_period(sessions, keys, state=store.RETRYING) -> deliveries.RetryReport:
    async with sessions() as session, session.begin():
        return await deliveries.retry_period(session, keys, store.utcnow(), state)


# --- the history ----------------------------------------------------------------------------


@pytest.mark.smtp_replies("250", "550", "451")
async def test_a_period_counts_its_rows_by_state_and_lists_them_filtered(
    mail_settings, smtp_server, engine, sessions
):
    settings = mail_settings.model_copy(update=WAIT_AN_HOUR)
    await _first_digests(settings, engine, sessions, "rathaus@a.de", "rathaus@b.de", "rathaus@c.de")

    async with sessions() as session:
        (summary,) = await store.period_summaries(session)
        failed = await store.find_deliveries(session, store.DeliveryFilter(states=("failed",)))
        by_address = await store.find_deliveries(session, store.DeliveryFilter(address="B.DE"))
        page = await store.find_deliveries(session, store.DeliveryFilter(), limit=2, offset=1)
        total = await store.count_deliveries(session, store.DeliveryFilter(address="rathaus"))
        retrying = await store.count_deliveries(
            session, store.DeliveryFilter(period_keys=(summary.key,), states=(store.RETRYING,))
        )
    assert (summary.count("sent"), summary.count("failed"), summary.count("retrying")) == (1, 1, 1)
    assert summary.total == 3 and summary.frequency is store.Frequency.WEEKLY
    assert deliveries.period_label(summary).startswith("Wochenüberblick ")
    assert summary.end == store.Period.of((await _rows(sessions))[0]).end
    assert [e.email for e in failed] == ["rathaus@b.de"]
    assert failed[0].last_reply.startswith("550") and failed[0].attempts == 1
    assert failed[0].when is not None and failed[0].sent_at is None
    assert [e.email for e in by_address] == ["rathaus@b.de"]
    assert [e.email for e in page] == ["rathaus@b.de", "rathaus@c.de"]
    assert (total, retrying) == (3, 1)


@pytest.mark.smtp_replies("550", "250")
async def test_an_address_history_lists_its_periods_newest_first(
    mail_settings, smtp_server, engine, sessions
):
    await import_demo(sessions)
    (address,) = await subscribe(
        sessions, "rathaus@leipzig.de", name="Stadt Leipzig", partner="Kyjiw"
    )
    at = next_monday_8am()
    await run_digests(mail_settings, sessions, at)
    await _add_article(sessions, "Neu in Woche zwei")
    await run_digests(mail_settings, sessions, at + timedelta(days=7))

    async with sessions() as session:
        history = await store.address_history(session, address.id)
    assert [e.state for e in history] == ["sent", "failed"]
    assert history[0].period_end > history[1].period_end
    assert history[0].last_reply == "OK queued" and history[0].when == history[0].sent_at
    assert history[1].last_reply.startswith("550") and history[1].last_attempt_at is not None


async def _add_article(sessions, title: str) -> None:
    from service import ingest

    await ingest.save(
        sessions,
        ingest.parse_json(
            f'{{"title": "{title}", "teaser": "x", "place": "Bonn", "published": "2026-11-24"}}'
        ),
    )


async def test_periods_are_named_by_frequency_and_day_or_by_their_key(
    mail_settings, smtp_server, engine, sessions
):
    at, _, (row,) = await _first_digests(mail_settings, engine, sessions, "rathaus@leipzig.de")
    name = deliveries.period_name(row.period_key, row.period_end)
    assert name == f"weekly:{at.astimezone(BERLIN).date().isoformat()}"

    async with sessions() as session:
        assert await deliveries.PeriodRef.parse(name).keys(session) == [row.period_key]
        exact = deliveries.PeriodRef.parse(row.period_key.lower())
        assert await exact.keys(session) == [row.period_key]
        earlier = deliveries.PeriodRef.parse(f"weekly:{(at - timedelta(days=7)).date()}")
        assert await earlier.keys(session) == []
        assert await deliveries.PeriodRef.parse(name.replace("weekly", "daily")).keys(session) == []
    for bad in ("weekly", "hourly:2026-11-23", "weekly:2026-13-01", "weekly:23.11.2026"):
        with pytest.raises(deliveries.PeriodNameError, match="FREQUENCY:YYYY-MM-DD"):
            deliveries.PeriodRef.parse(bad)


async def test_paging_through_eleven_thousand_addresses_stays_fast(settings, engine, sessions):
    now = datetime.now(UTC)
    period = store.Period(store.Frequency.WEEKLY, now - timedelta(days=7), now)
    async with sessions() as session, session.begin():
        subscriber = await store.create_subscriber(
            session, name="Viele", frequency=store.Frequency.WEEKLY
        )
        await session.execute(
            insert(store.Address),
            [
                {
                    "subscriber_id": subscriber.id,
                    "email": f"rathaus{n:05d}@example.org",
                    "status": "active",
                    "consecutive_failures": 0,
                    "created_at": now,
                }
                for n in range(11_000)
            ],
        )
        ids = list(await session.scalars(store.select(store.Address.id)))
        statuses = ("sent", "failed", "pending")
        await session.execute(
            insert(store.Delivery),
            [
                {
                    "address_id": address_id,
                    "period_key": period.key,
                    "period_start": period.start,
                    "period_end": period.end,
                    "status": statuses[n % 3],
                    "attempts": 1,
                    "uncertain_attempts": 0,
                    "next_attempt_at": now + timedelta(hours=1),
                    "after_article_id": 0,
                    "upto_article_id": 0,
                    "created_at": now,
                }
                for n, address_id in enumerate(ids)
            ],
        )

    started = time.perf_counter()
    async with sessions() as session:
        (summary,) = await store.period_summaries(session)
        failed = store.DeliveryFilter(period_keys=(period.key,), states=("failed",))
        last_page = await store.find_deliveries(session, failed, limit=50, offset=3650)
        count = await store.count_deliveries(session, failed)
        found = await store.find_deliveries(session, store.DeliveryFilter(address="10999@"))
    elapsed = time.perf_counter() - started
    assert (summary.count("sent"), summary.count("retrying")) == (3667, 3666)
    assert count == 3667 and len(last_page) == 17
    assert [e.email for e in found] == ["rathaus10999@example.org"]
    assert elapsed < 5, f"history queries took {elapsed:.1f} s"

    async with sessions() as session, session.begin():
        report = await deliveries.retry_period(session, [period.key], store.utcnow())
    assert len(report.retried) == 3666 and report.refused == []


# --- retries --------------------------------------------------------------------------------


@pytest.mark.smtp_replies("550")
async def test_a_failed_delivery_retried_is_sent_once(mail_settings, smtp_server, engine, sessions):
    at, first, (row,) = await _first_digests(mail_settings, engine, sessions, "rathaus@leipzig.de")
    assert first.failed == 1 and row.status == "failed"

    report = await _retry(sessions, [row.id])
    (reopened,) = await _rows(sessions)
    again = await run_digests(mail_settings, sessions, at)
    third = await run_digests(mail_settings, sessions, at)

    assert report.retried == [row.id] and report.refused == [] and report.already_due == []
    assert (reopened.status, reopened.attempts) == ("pending", 0)
    assert reopened.last_reply.startswith("550")  # the history keeps why it failed
    assert (again.sent, third.sent) == (1, 0)
    assert len(smtp_server.handler.to("rathaus@leipzig.de")) == 1
    (sent,) = await _rows(sessions)
    assert (sent.status, sent.attempts) == ("sent", 1)


async def test_a_sent_or_uncertain_delivery_is_never_made_pending_again(
    mail_settings, smtp_server, engine, sessions
):
    at, _, (sent, maybe) = await _first_digests(
        mail_settings, engine, sessions, "rathaus@leipzig.de", "rathaus@borna.de"
    )
    async with sessions() as session, session.begin():
        row = await session.get(store.Delivery, maybe.id)
        row.status = "uncertain"

    report = await _retry(sessions, [sent.id, maybe.id, 999_999])
    period = await _retry_period(sessions, [sent.period_key], "failed")

    assert report.retried == [] and report.already_due == []
    reasons = {r.delivery_id: r.reason for r in report.refused}
    assert reasons == {
        sent.id: deliveries.Reason.SENT,
        maybe.id: deliveries.Reason.UNCERTAIN,
        999_999: deliveries.Reason.UNKNOWN,
    }
    refusal = next(r for r in report.refused if r.delivery_id == sent.id)
    assert refusal.email == "rathaus@leipzig.de" and "never sent twice" in refusal.message
    assert "nie zweimal" in refusal.german
    assert period.retried == period.refused == []
    assert [r.status for r in await _rows(sessions)] == ["sent", "uncertain"]
    assert (await run_digests(mail_settings, sessions, at)).sent == 0
    assert len(smtp_server.handler.received) == 2


@pytest.mark.smtp_replies("451", "451")
async def test_the_retrying_rows_of_a_period_are_sent_at_the_next_run_once_due(
    mail_settings, smtp_server, engine, sessions
):
    settings = mail_settings.model_copy(update=WAIT_AN_HOUR)
    at, first, rows = await _first_digests(
        settings, engine, sessions, "rathaus@leipzig.de", "rathaus@borna.de"
    )
    waiting = await run_digests(settings, sessions, at)
    key = rows[0].period_key

    report = await _retry_period(sessions, [key])
    again = await _retry(sessions, report.retried)
    sent = await run_digests(settings, sessions, at)

    assert (first.retrying, waiting.attempts) == (2, 0)
    assert len(report.retried) == 2 and report.refused == []
    assert again.retried == [] and sorted(again.already_due) == sorted(report.retried)
    assert sent.sent == 2
    assert len(smtp_server.handler.to("rathaus@leipzig.de")) == 1
    assert len(smtp_server.handler.to("rathaus@borna.de")) == 1


@pytest.mark.smtp_replies("550", "250")
async def test_a_failed_row_a_newer_digest_carries_is_refused(
    mail_settings, smtp_server, engine, sessions
):
    at, _, _ = await _first_digests(mail_settings, engine, sessions, "rathaus@leipzig.de")
    await _add_article(sessions, "Neu")
    await run_digests(mail_settings, sessions, at + timedelta(days=7))
    failed, newer = await _rows(sessions)

    report = await _retry(sessions, [failed.id])
    period = await _retry_period(sessions, [failed.period_key], "failed")

    assert (failed.status, newer.status) == ("failed", "sent")
    (refusal,) = report.refused
    assert refusal.reason is deliveries.Reason.NEWER_DIGEST and newer.period_key in refusal.message
    assert [r.reason for r in period.refused] == [deliveries.Reason.NEWER_DIGEST]
    assert (await _rows(sessions))[0].status == "failed"


@pytest.mark.smtp_replies("550")
async def test_a_failed_row_of_a_bounced_address_is_refused(
    mail_settings, smtp_server, engine, sessions
):
    settings = mail_settings.model_copy(update={"bounce_after_failures": 1})
    _, _, (row,) = await _first_digests(settings, engine, sessions, "rathaus@leipzig.de")

    report = await _retry(sessions, [row.id])

    (refusal,) = report.refused
    assert refusal.reason is deliveries.Reason.ADDRESS_INACTIVE and "bounced" in refusal.message
    assert (await _rows(sessions))[0].status == "failed"


@pytest.mark.smtp_replies("451")
async def test_a_retry_racing_a_claim_changes_the_row_once(
    mail_settings, smtp_server, engine, sessions
):
    """A sender claims the retrying row as its retry comes due, in a transaction that holds
    the row (PostgreSQL: its row lock; SQLite: the write lock) while the operator's retry
    waits; once the claim commits, the retry finds the row being sent and changes nothing."""
    settings = mail_settings.model_copy(update=WAIT_AN_HOUR)
    at, _, (row,) = await _first_digests(settings, engine, sessions, "rathaus@leipzig.de")
    assert (row.status, row.attempts) == ("pending", 1)

    async with sessions() as claimer:
        await claimer.begin()
        due_then = row.next_attempt_at + timedelta(seconds=1)
        claimed = await store.claim_deliveries(claimer, "w1", due_then, 10, timedelta(minutes=5))
        retry = asyncio.create_task(_retry(sessions, [row.id]))
        await asyncio.sleep(0.3)
        waited = not retry.done()
        await claimer.commit()
    report = await retry

    assert claimed == [row.id] and waited
    assert report.retried == [] and [r.reason for r in report.refused] == ["sending"]
    (after,) = await _rows(sessions)
    assert (after.status, after.claimed_by, after.attempts) == ("sending", "w1", 1)

    async with sessions() as session, session.begin():
        assert await store.release_claims(session, ["w1"]) == 1
    assert (await _retry(sessions, [row.id])).retried == [row.id]
    runner = digest.DigestRunner(settings, sessions, mailer.create_transport(settings))
    try:
        reports = [await runner.run(at), await runner.run(at)]
    finally:
        await runner._transport.close()
    assert [r.sent for r in reports] == [1, 0]
    assert len(smtp_server.handler.to("rathaus@leipzig.de")) == 1


@pytest.mark.smtp_replies("550")
async def test_two_retries_of_one_failed_row_reopen_it_once(
    mail_settings, smtp_server, engine, sessions
):
    at, _, (row,) = await _first_digests(mail_settings, engine, sessions, "rathaus@leipzig.de")

    # One instant for both: with two, the retry that loses the race could find the row due
    # a millisecond after its own `now` and call it "being sent" instead of "already due".
    now = store.utcnow()
    first, second = await asyncio.gather(
        _retry(sessions, [row.id], now), _retry(sessions, [row.id], now)
    )

    assert sorted([first.retried, second.retried]) == [[], [row.id]]
    assert sorted([first.already_due, second.already_due]) == [[], [row.id]]
    assert (await run_digests(mail_settings, sessions, at)).sent == 1
    assert len(smtp_server.handler.to("rathaus@leipzig.de")) == 1

"""Several real processes on one PostgreSQL: each digest exactly once; SIGTERM is graceful."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import signal
import time
from datetime import UTC, datetime, timedelta

from service import store

from .helpers import cli, import_demo, next_monday_8am, postgres_only, start

ADDRESSES = 2000


async def _subscribed(sessions, count: int, confirmed: datetime) -> list[str]:
    """One municipality with `count` confirmed addresses (one slug, quick to create)."""
    emails = [f"stelle{i:04d}@gemeinde.example" for i in range(count)]
    async with sessions() as session, session.begin():
        subscriber = await store.create_subscriber(
            session, name="Gemeinde Vielfach", frequency=store.Frequency.WEEKLY
        )
        session.add_all(
            store.Address(
                subscriber_id=subscriber.id,
                email=email,
                status=store.AddressStatus.ACTIVE,
                consecutive_failures=0,
                created_at=confirmed,
                confirmed_at=confirmed,
            )
            for email in emails
        )
    return emails


async def _setup(sessions, count: int) -> list[str]:
    await import_demo(sessions)
    return await _subscribed(sessions, count, datetime.now(UTC) - timedelta(days=21))


async def _reached(handler, count: int, seconds: float) -> None:
    """Wait until `count` messages arrived, for at most `seconds`; not reaching them is no
    failure here (the workers must be stopped first, the asserts after tell)."""
    with contextlib.suppress(AssertionError):
        await handler.wait_for(count, seconds)


async def _stop(process: asyncio.subprocess.Process) -> tuple[int, str]:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return await process.wait(), stderr.decode()


def _exactly_once(handler, emails: list[str]) -> None:
    per_address = collections.Counter(r.recipients[0] for r in handler.received)
    assert set(per_address) == set(emails)
    assert [e for e, n in per_address.items() if n != 1] == []


@postgres_only
async def test_two_workers_started_together_send_each_digest_once(
    mail_settings, smtp_server, sessions
):
    emails = await _setup(sessions, ADDRESSES)

    workers = [await start(mail_settings, "worker") for _ in range(2)]
    await _reached(smtp_server.handler, ADDRESSES, 180)
    await asyncio.sleep(1.5)  # room for a duplicate to show up
    results = [await _stop(w) for w in workers]

    assert [code for code, _ in results] == [0, 0], results
    _exactly_once(smtp_server.handler, emails)
    async with sessions() as session:
        counts = await store.counts_by_status(session, store.Delivery)
    assert counts == {"sent": ADDRESSES}


@postgres_only
async def test_two_runs_by_hand_at_once_send_each_digest_once(mail_settings, smtp_server, sessions):
    emails = await _setup(sessions, ADDRESSES)
    at = next_monday_8am().isoformat()

    results = await asyncio.gather(
        cli(mail_settings, "digest", "run", "--at", at),
        cli(mail_settings, "digest", "run", "--at", at),
    )

    assert [code for code, _, _ in results] == [0, 0], results
    _exactly_once(smtp_server.handler, emails)
    sent = [int(re.search(r"sent (\d+)", out).group(1)) for _, out, _ in results]
    assert sum(sent) == ADDRESSES and min(sent) > 0  # both really took part


@postgres_only
async def test_a_run_by_hand_beside_a_running_worker_sends_each_digest_once(
    mail_settings, smtp_server, sessions
):
    emails = await _setup(sessions, ADDRESSES)

    worker = await start(mail_settings, "worker")
    await _reached(smtp_server.handler, 50, 60)
    code, _, err = await cli(mail_settings, "digest", "run")
    await _reached(smtp_server.handler, ADDRESSES, 180)
    await asyncio.sleep(1.5)
    worker_code, worker_err = await _stop(worker)

    assert (code, worker_code) == (0, 0), (err, worker_err)
    _exactly_once(smtp_server.handler, emails)


async def test_sigterm_finishes_the_message_in_flight_and_releases_the_rest(
    mail_settings, smtp_server, sessions
):
    emails = await _setup(sessions, 200)
    smtp_server.handler.slow_seconds = 0.05
    worker = await start(mail_settings, "worker")
    await _reached(smtp_server.handler, 40, 60)

    started = time.monotonic()
    code, err = await _stop(worker)

    assert code == 0, err
    assert time.monotonic() - started < mail_settings.shutdown_grace_seconds
    async with sessions() as session:
        counts = await store.counts_by_status(session, store.Delivery)
    received = len(smtp_server.handler.received)
    assert counts.get("sending", 0) == 0
    assert counts["sent"] == received  # the message in flight was recorded too
    assert smtp_server.handler.attempts == received  # and none was cut off
    assert counts["sent"] + counts["pending"] == len(emails)
    assert received < len(emails)

    rerun = await cli(mail_settings, "digest", "run")
    assert rerun[0] == 0
    _exactly_once(smtp_server.handler, emails)

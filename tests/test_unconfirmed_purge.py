"""Addresses that asked to subscribe and never confirmed are erased once their request is
old (DSGVO: kept no longer than needed); confirmed ones and recent requests stay."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import func

from service import runtime, scheduler, store, subscribers

from .helpers import wait_until

NOW = store.utcnow()


async def _request(settings, sessions, name: str, email: str, days_ago: float) -> None:
    data = subscribers.SubscriberIn.model_validate({"name": name, "email": email})
    at = NOW - timedelta(days=days_ago)
    await subscribers.request_subscription(settings, sessions, data, "192.0.2.7", at)


async def _emails(sessions) -> set[str]:
    async with sessions() as session:
        return set(await session.scalars(store.select(store.Address.email)))


async def _municipalities(sessions) -> set[str]:
    async with sessions() as session:
        return set(await session.scalars(store.select(store.Subscriber.name)))


async def test_only_old_requests_that_were_never_confirmed_are_erased(settings, sessions):
    await _request(settings, sessions, "Stadt Borna", "rathaus@borna.de", days_ago=40)
    await _request(settings, sessions, "Stadt Celle", "post@celle.de", days_ago=40)
    await _request(settings, sessions, "Stadt Celle", "post@celle.de", days_ago=2)  # asked again
    await _request(settings, sessions, "Stadt Jena", "info@jena.de", days_ago=40)
    await _request(settings, sessions, "Stadt Jena", "presse@jena.de", days_ago=40)
    async with sessions() as session, session.begin():  # Jena's first address confirmed
        store.activate(await store.address_by_email(session, "info@jena.de"), NOW)

    purged = await subscribers.purge_unconfirmed(settings, sessions, NOW)

    assert purged == 2
    assert await _emails(sessions) == {"post@celle.de", "info@jena.de"}
    # Borna was created by its request alone; Jena keeps its confirmed address.
    assert await _municipalities(sessions) == {"Stadt Celle", "Stadt Jena"}
    async with sessions() as session:
        counts = await store.anonymous_counts(session)
        requests = set(await session.scalars(store.select(store.ConfirmationRequest.email)))
        consents = await session.scalar(store.select(func.count()).select_from(store.Consent))
    assert counts["unconfirmed_purged"] == 2
    assert requests == {"post@celle.de"}  # only the recent request is kept
    assert consents == 3  # Celle's two requests and Jena's confirmed one
    assert await subscribers.purge_unconfirmed(settings, sessions, NOW) == 0


async def test_no_address_is_erased_while_its_link_is_still_valid(settings, sessions):
    short = settings.model_copy(update={"unconfirmed_keep_days": 1, "confirm_max_age_hours": 72})
    await _request(short, sessions, "Stadt Borna", "rathaus@borna.de", days_ago=2)

    assert await subscribers.purge_unconfirmed(short, sessions, NOW) == 0
    assert await _emails(sessions) == {"rathaus@borna.de"}
    assert await subscribers.purge_unconfirmed(short, sessions, NOW + timedelta(days=2)) == 1


async def test_the_runtime_erases_them_every_hour(settings, engine, sessions):
    await _request(settings, sessions, "Stadt Borna", "rathaus@borna.de", days_ago=40)

    async with runtime.Runtime(settings, engine, sessions) as running:
        job = running.scheduler.get_job(scheduler.PURGE_JOB)
        assert job is not None and job.trigger.interval == timedelta(hours=1)

        async def erased() -> bool:
            return "rathaus@borna.de" not in await _emails(sessions)

        await wait_until(erased, what="the unconfirmed address erased")


async def test_a_stop_lets_the_erasure_in_progress_end(settings, engine, sessions, caplog):
    """Regression: stopping cancelled every job still running (APScheduler's shutdown), so
    a feed build or an erasure was cut short and logged as an error with a CancelledError
    (seen when Ctrl-C came just after start-up)."""
    await _request(settings, sessions, "Stadt Borna", "rathaus@borna.de", days_ago=40)
    caplog.set_level(logging.INFO)  # errors are what it checks; they pass any level set
    async with sessions() as blocker:  # holds the address: the erasure waits for it
        address = await store.address_by_email(blocker, "rathaus@borna.de")
        address.consecutive_failures += 1
        await blocker.flush()
        running = runtime.Runtime(settings, engine, sessions)
        await running.__aenter__()
        # Submitted (its next run moved an hour on): its task runs before the stop's.
        await wait_until(lambda: _next_purge_in(running) > timedelta(minutes=30), what="a purge")
        stopping = asyncio.create_task(running.__aexit__(None, None, None))
        await asyncio.wait({stopping}, timeout=1.0)  # unfixed, the stop ends meanwhile
        await blocker.rollback()
    await stopping

    assert "rathaus@borna.de" not in await _emails(sessions)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def _next_purge_in(running: runtime.Runtime) -> timedelta:
    job = running.scheduler.get_job(scheduler.PURGE_JOB)
    assert job is not None
    return job.next_run_time - datetime.now(UTC)

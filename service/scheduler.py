"""Scheduler: APScheduler 3 jobs that keep feeds up to date and send digests.

Owns no data. What is due is derived from the store each time a job runs, so a restart,
a second replica or a missed tick changes nothing that is produced. Imports `config`,
`store`, `feeds`, `digest`, `confirmations` and `sources`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import confirmations, digest, feeds, store, subscribers
from service.clock import BERLIN
from service.config import Settings
from service.sources import poller as sources_poller

log = logging.getLogger(__name__)

FEEDS_JOB = "feeds"
DIGEST_RETRY_JOB = "digest-retry"
CONFIRMATIONS_JOB = "confirmations"
SOURCES_JOB = "sources"
PURGE_JOB = "purge-unconfirmed"
PURGE_SECONDS = 3600


class FeedRefresher:
    """Rebuilds the feeds when the articles (or the site title) changed since last time."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._sessions = sessions
        self._lock = asyncio.Lock()
        self._built_version: str | None = None
        self._pings: set[asyncio.Task[None]] = set()  # at most one pinger
        self._unpinged: set[str] = set()  # changed feed URLs the pinger has yet to send
        self.last_build: datetime | None = None

    async def _version(self) -> str:
        async with self._sessions() as session:
            # The build's own fingerprint: it moves with everything a feed shows.
            return await store.feeds_fingerprint(session, feeds.settings_parts(self._settings))

    async def wait_idle(self) -> None:
        """Wait for a build in progress, so it is done before its engine is closed (a job
        that outlives `shutdown(wait=False)` would leave a connection behind)."""
        async with self._lock:
            return

    async def refresh(self, *, force: bool = False) -> feeds.BuildReport | None:
        """Build the feeds if stale (or `force`); None when nothing was built."""
        async with self._lock:
            version = await self._version()
            if not force and version == self._built_version:
                return None
            report = await feeds.build_feeds(
                self._settings, self._engine, self._sessions, force=True
            )
            if report is not None:
                self._built_version = version
                self.last_build = datetime.now(UTC)
                self._announce(report)
            return report

    def _announce(self, report: feeds.BuildReport) -> None:
        """Tell the WebSub hub (if any) of the changed feeds, in the background: a slow or
        refusing hub never holds up or fails a build."""
        hub = self._settings.hub_url
        if hub is None or not report.changed:
            return
        self._unpinged.update(self._settings.link(f"feeds/{path}") for path in report.changed)
        if not self._pings:  # else the running pinger takes these up when its round ends
            task = asyncio.create_task(self._ping(hub))
            self._pings.add(task)
            task.add_done_callback(self._pings.discard)

    async def _ping(self, hub: str) -> None:
        """Ping the hub for the changed feeds in rounds, one at a time: feeds that change
        again while a round runs are pinged once more after it, not once per build (a slow
        or refusing hub would otherwise collect a full set of retrying pings per build)."""
        while self._unpinged:
            urls = sorted(self._unpinged)
            self._unpinged.clear()
            await feeds.websub.publish(hub, urls)

    async def stop_pings(self) -> None:
        """Cancel pings still retrying (at shutdown)."""
        for task in list(self._pings):
            task.cancel()
        await asyncio.gather(*self._pings, return_exceptions=True)


async def _run_digest(runner: digest.DigestRunner) -> None:
    # A failing run must not kill the job: the next tick tries again from the ledger.
    try:
        await runner.run()
    except Exception:
        log.exception("digest run failed; the next tick retries")


async def _poll_sources(poller: sources_poller.Poller) -> None:
    try:
        await poller.run()
    except Exception:
        log.exception("polling sources failed; the next tick retries")


async def _send_confirmations(sender: confirmations.ConfirmationSender) -> None:
    try:
        await sender.run()
    except Exception:
        log.exception("sending confirmation mails failed; the next tick retries")


async def _purge_unconfirmed(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    try:
        purged = await subscribers.purge_unconfirmed(settings, sessions, store.utcnow())
    except Exception:  # two replicas erasing the same address: the loser's next tick is clean
        log.exception("erasing unconfirmed addresses failed; the next tick retries")
        return
    if purged:
        log.info("erased %d addresses that never confirmed their subscription", purged)


class InFlight:
    """The job runs in progress, so that a stop can let them end: APScheduler's
    `shutdown(wait=False)` cancels every job still running (a feed build or an erasure cut
    short, and logged as an error)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def tracked(self, func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(func)
        async def run(*args: Any, **kwargs: Any) -> Any:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                return await func(*args, **kwargs)
            finally:
                self._tasks.discard(task)

        return run

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for the runs in progress; False if one outlived them."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=seconds)
        return not pending


def create_scheduler(
    settings: Settings,
    refresher: FeedRefresher,
    runner: digest.DigestRunner | None,
    confirmation_sender: confirmations.ConfirmationSender | None = None,
    poller: sources_poller.Poller | None = None,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    in_flight: InFlight | None = None,
) -> AsyncIOScheduler:
    """A scheduler with partnerpost's jobs, not yet started; the caller starts and stops it.

    Digests: a cron job per frequency at its period end, and a job every
    `digest_retry_seconds` that sends retries and, run at once on start, catches up on a
    period that ended while nothing ran. Both only derive what is due from the ledger.
    Confirmation mails: a job every `confirmation_send_seconds` sends the queue and its
    retries (a new request also wakes the sender at once, see `ConfirmationSender.wake`).
    Sources: a job every `sources_poll_seconds` fetches the sources that are due.
    With `sessions`, an hourly job erases addresses that never confirmed (DSGVO).
    With `in_flight`, every job's runs are tracked there.
    """
    scheduler = AsyncIOScheduler(timezone=BERLIN)
    common = {"coalesce": True, "max_instances": 1}
    track = in_flight.tracked if in_flight is not None else (lambda func: func)

    def every(seconds: int, job_id: str, func: Any, *args: Any, at_once: bool = True) -> None:
        """An interval job that, `at_once`, also runs right away."""
        first = datetime.now(BERLIN) + timedelta(seconds=0 if at_once else seconds)
        scheduler.add_job(
            track(func),
            "interval",
            seconds=seconds,
            args=list(args),
            id=job_id,
            next_run_time=first,
            misfire_grace_time=seconds,
            **common,
        )

    every(settings.feeds_check_seconds, FEEDS_JOB, refresher.refresh)
    if confirmation_sender is not None:
        every(
            settings.confirmation_send_seconds,
            CONFIRMATIONS_JOB,
            _send_confirmations,
            confirmation_sender,
        )
    if poller is not None:
        # Not at once: a process starting is busy enough, and due sources wait at most a tick.
        every(settings.sources_poll_seconds, SOURCES_JOB, _poll_sources, poller, at_once=False)
    if sessions is not None:
        every(PURGE_SECONDS, PURGE_JOB, _purge_unconfirmed, settings, sessions)
    if runner is None:
        return scheduler
    for frequency in store.Frequency:
        scheduler.add_job(
            track(_run_digest),
            CronTrigger.from_crontab(digest.cron_of(settings, frequency), timezone=BERLIN),
            args=[runner],
            id=f"digest-{frequency}",
            misfire_grace_time=3600,
            **common,
        )
    every(settings.digest_retry_seconds, DIGEST_RETRY_JOB, _run_digest, runner)
    return scheduler


def request_feed_refresh(scheduler: AsyncIOScheduler) -> None:
    """Run the feed job now instead of at its next tick (after an edit through the API)."""
    _run_now(scheduler, FEEDS_JOB)


def request_digest_retry(scheduler: AsyncIOScheduler) -> None:
    """Run the digest retry job now instead of at its next tick (an operator made
    deliveries due); one already running picks them up or leaves them to its next tick."""
    _run_now(scheduler, DIGEST_RETRY_JOB)


def _run_now(scheduler: AsyncIOScheduler, job_id: str) -> None:
    job = scheduler.get_job(job_id)
    if job is not None:
        job.modify(next_run_time=datetime.now(BERLIN))

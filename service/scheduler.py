"""Scheduler: APScheduler 3 jobs that keep feeds (and later digests) up to date.

Owns no data. What is due is derived from the store each time a job runs, so a restart,
a second replica or a missed tick changes nothing that is produced. Imports `config`,
`store` and `feeds`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import feeds, store
from service.config import Settings

log = logging.getLogger(__name__)

BERLIN = ZoneInfo("Europe/Berlin")
FEEDS_JOB = "feeds"


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
        self.last_build: datetime | None = None

    async def _version(self) -> str:
        async with self._sessions() as session:
            articles = await store.articles_version(session)
            heading = await store.get_fact(session, store.LISTING_HEADING)
        return f"{articles}|{heading}"

    async def refresh(self, *, force: bool = False) -> feeds.BuildReport | None:
        """Build the feeds if stale (or `force`); None when nothing was built."""
        async with self._lock:
            version = await self._version()
            if not force and version == self._built_version:
                return None
            report = await feeds.build_feeds(self._settings, self._engine, self._sessions)
            if report is not None:
                self._built_version = version
                self.last_build = datetime.now(BERLIN)
            return report


def create_scheduler(settings: Settings, refresher: FeedRefresher) -> AsyncIOScheduler:
    """A scheduler with partnerpost's jobs, not yet started; the caller starts and stops it."""
    scheduler = AsyncIOScheduler(timezone=BERLIN)
    scheduler.add_job(
        refresher.refresh,
        "interval",
        seconds=settings.feeds_check_seconds,
        id=FEEDS_JOB,
        next_run_time=datetime.now(BERLIN),
        coalesce=True,
        max_instances=1,
        misfire_grace_time=settings.feeds_check_seconds,
    )
    return scheduler


def request_feed_refresh(scheduler: AsyncIOScheduler) -> None:
    """Run the feed job now instead of at its next tick (after an edit through the API)."""
    job = scheduler.get_job(FEEDS_JOB)
    if job is not None:
        job.modify(next_run_time=datetime.now(BERLIN))

"""Feed build: one build of every feed under the store's feeds lock, refusing to rewrite
feeds made for another public URL.

Imports `config`, `errors`, `metrics`, `store` and the other `feeds` modules.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import metrics, store
from service.config import Settings
from service.errors import FeedsBaseUrlChangedError
from service.feeds.files import BuildReport, write_feeds
from service.feeds.fragments import render_all
from service.feeds.render import MUNICIPALITIES_DIR, TOPICS_DIR
from service.feeds.specs import feed_specs

log = logging.getLogger(__name__)

# Site fact: the public URL the current feeds link to.
BASE_URL_FACT = "feeds_base_url"


async def _check_base_url(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], *, force: bool
) -> None:
    """Refuse (unless `force`) to rewrite feeds built for another public URL."""
    async with sessions() as session, session.begin():
        recorded = await store.get_fact(session, BASE_URL_FACT)
        if recorded == settings.public_url:
            return
        if recorded is not None:
            if not force:
                raise FeedsBaseUrlChangedError(recorded, settings.public_url)
            log.warning(
                "feeds were built for %s; rebuilding them for %s", recorded, settings.public_url
            )
        await store.set_fact(session, BASE_URL_FACT, settings.public_url)


async def build_feeds(
    settings: Settings,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    *,
    wait: bool = False,
    force: bool = False,
) -> BuildReport | None:
    """Build all feeds; None when another process is building them right now, or, with
    `wait`, after it has finished (so the build sees what the caller just stored).

    Raises `FeedsBaseUrlChangedError` when the feeds were built for another public URL,
    unless `force` (the server's own builds force: its settings are the live ones).
    """
    started = time.perf_counter()
    async with store.exclusive(engine, "feeds", wait=wait) as acquired:
        if not acquired:
            log.info("feed build skipped: another process holds the feeds lock")
            return None
        await _check_base_url(settings, sessions, force=force)
        async with sessions() as session:
            specs = await feed_specs(settings, session)
        report = write_feeds(
            settings, render_all(settings, specs), prune=(TOPICS_DIR, MUNICIPALITIES_DIR)
        )
    report.seconds = time.perf_counter() - started
    metrics.FEED_BUILD_SECONDS.observe(report.seconds)
    log.info(
        "feeds built: %d written, %d unchanged, %d removed in %.3fs",
        len(report.written),
        report.unchanged,
        len(report.removed),
        report.seconds,
    )
    return report

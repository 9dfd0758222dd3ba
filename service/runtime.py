"""Runtime: the background parts of a running partnerpost, started and stopped in one order.

Owns the mail transport, the feed refresher, the digest runner, the confirmation sender, the source
poller and the scheduler that drives them, for `serve` (the web app's lifespan) and `worker` alike.
Stopping pauses the scheduler (no new runs), gives the messages and fetches in flight the grace
period and hands back unsent claims, lets the job runs in progress end (within the grace period
too), shuts the scheduler down, waits for a feed build in progress and closes the transport.
The engine is the caller's: it opens it before and closes it after.
Imports `config`, `mailer`, `sources`, `digest`, `confirmations` and `scheduler`.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import confirmations, digest, mailer, scheduler
from service.config import Settings
from service.sources.poller import Poller

log = logging.getLogger(__name__)


class Runtime:
    """`async with Runtime(...) as runtime:` runs the scheduler's jobs until the block ends.

    Nothing is opened before the block: the parts only exist until then.
    """

    def __init__(
        self, settings: Settings, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self._settings = settings
        self.transport = mailer.create_transport(settings)
        self.refresher = scheduler.FeedRefresher(settings, engine, sessions)
        self.runner = digest.DigestRunner(settings, sessions, self.transport)
        self.confirmations = confirmations.ConfirmationSender(settings, sessions, self.transport)
        self.poller = Poller(settings, sessions)
        self._in_flight = scheduler.InFlight()
        self.scheduler = scheduler.create_scheduler(
            settings,
            self.refresher,
            self.runner,
            self.confirmations,
            self.poller,
            sessions,
            self._in_flight,
        )
        # Set when the block ends: False if the messages in flight outlived the grace
        # period (their claims then expire by their lease).
        self.stopped_in_time: bool | None = None

    async def __aenter__(self) -> Runtime:
        self.scheduler.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.scheduler.pause()  # no new runs; the one going may finish its message
            self.stopped_in_time = await self._stop_within_grace()
            # Their parts are stopped: let the job runs end before shutdown cancels them.
            grace = self._settings.shutdown_grace_seconds
            if not await self._in_flight.wait(grace):
                log.error("a scheduled job did not end within %ss; cancelling it", grace)
            self.scheduler.shutdown(wait=False)
            await self.refresher.wait_idle()
            await self.refresher.stop_pings()
        finally:
            await self.transport.close()

    def request_feed_refresh(self) -> None:
        """Build the feeds now rather than at the job's next tick (articles changed)."""
        scheduler.request_feed_refresh(self.scheduler)

    def request_digest_retry(self) -> None:
        """Send the deliveries due now rather than at the retry job's next tick."""
        scheduler.request_digest_retry(self.scheduler)

    async def _stop_within_grace(self) -> bool:
        """Let the messages in flight finish and hand back unsent claims; False if that
        took longer than the grace period."""
        grace = self._settings.shutdown_grace_seconds
        try:
            await asyncio.wait_for(
                asyncio.gather(self.runner.stop(), self.confirmations.stop(), self.poller.stop()),
                grace,
            )
        except TimeoutError:
            log.error(
                "worker %s: the message in flight did not finish within %ss",
                self.runner.worker,
                grace,
            )
            return False
        return True

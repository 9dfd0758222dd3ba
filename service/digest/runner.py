"""The digest run: plans due periods into the delivery ledger, claims rows batch by
batch, has them sent (`digest.sending`, one sender per SMTP connection), and reports what
it did.

Owns no data (the ledger's rows are `store`'s). Imports `config`, `store`, `mailer`,
`metrics` and `digest.periods`, `digest.render`, `digest.sending`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import mailer, metrics, processes, store
from service.config import Settings
from service.digest.periods import latest_period
from service.digest.render import DigestRenderer
from service.digest.sending import Progress, Sender, Sending, Work

# The package's name: operators filter the run's log lines by it.
log = logging.getLogger("service.digest")


@dataclass
class RunReport:
    """What a run did, counted in ledger rows: a row retried within the run counts once,
    by where it ended (sent, skipped, retrying later, failed); `attempts` counts sends."""

    periods: list[str] = field(default_factory=list)
    planned: int = 0
    sent: int = 0
    skipped: int = 0
    retrying: int = 0
    failed: int = 0
    uncertain: int = 0  # no reply to the end of the message, also after one retry
    attempts: int = 0
    released: int = 0
    seconds: float = 0.0
    send_seconds: float = 0.0  # of `seconds`, claiming, sending and recording
    _rows: dict[int, str] = field(default_factory=dict, repr=False)

    def record(self, delivery_id: int, outcome: str) -> None:
        """Count the row by its latest outcome in this run."""
        previous = self._rows.get(delivery_id)
        if previous is not None:
            setattr(self, previous, getattr(self, previous) - 1)
        self._rows[delivery_id] = outcome
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.attempts += 1

    @property
    def nothing_delivered(self) -> bool:
        """Rows wait for a retry and none was sent: the relay is likely down."""
        return self.retrying > 0 and self.sent == 0

    def problem(self) -> str | None:
        """Why the run did not do its job, for the operator; None when it did."""
        problems = []
        if self.nothing_delivered:
            problems.append(
                f"nothing could be delivered, {self.retrying} digest(s) wait for a retry; "
                "is the SMTP relay reachable?"
            )
        if self.failed:
            problems.append(f"{self.failed} digest(s) failed permanently (see the ledger)")
        return "; ".join(problems) or None

    def as_dict(self) -> dict[str, object]:
        """The counts as a JSON object for the structured log line."""
        return {
            "periods": self.periods,
            "sent": self.sent,
            "skipped": self.skipped,
            "retrying": self.retrying,
            "failed": self.failed,
            "uncertain": self.uncertain,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 3),
            "send_seconds": round(self.send_seconds, 3),
        }

    def summary(self) -> str:
        """One log line with the counts and, if any, the problem."""
        problem = self.problem()
        return (
            f"digest run: periods {', '.join(self.periods) or '-'}; sent {self.sent}, "
            f"skipped {self.skipped}, retrying {self.retrying}, failed {self.failed}, "
            f"uncertain {self.uncertain} ({self.attempts} attempts) in {self.seconds:.2f}s"
            + (f"; {problem}" if problem else "")
        )


def worker_name() -> str:
    """host:pid:random, so a claim names the process that holds it."""
    return f"{processes.local_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DigestRunner:
    """Plans due periods into the ledger and sends what is due, batch by batch."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        transport: mailer.Transport,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._transport = transport
        self.worker = worker_name()
        self._concurrency = settings.smtp_pool_size if settings.mailer == "smtp" else 1
        self.stopping = asyncio.Event()
        self.last_run: datetime | None = None
        self._lock = asyncio.Lock()

    async def stop(self) -> None:
        """Finish the message in flight, hand back unsent claims, and return when idle."""
        self.stopping.set()
        async with self._lock:  # held by a run until it has released its claims
            log.debug("digest runner %s stopped", self.worker)

    async def plan(self, at: datetime) -> tuple[list[str], int]:
        """Add ledger rows for the newest ended period of every frequency."""
        async with self._sessions() as session, session.begin():
            return await self._plan_in(session, at, store.utcnow())

    async def _plan_in(
        self, session: AsyncSession, at: datetime, now: datetime
    ) -> tuple[list[str], int]:
        """Plan the newest ended period of every frequency in `session`'s transaction."""
        keys, added = [], 0
        for frequency in store.Frequency:
            period = latest_period(self._settings, frequency, at)
            added += await store.plan_period(session, period, now)
            keys.append(period.key)
        return keys, added

    async def dry_run(self, at: datetime) -> list[tuple[str, str, int]]:
        """(address, period, articles) of every digest a run at `at` would send now;
        plans inside a transaction that is rolled back, so nothing changes."""
        due: list[tuple[str, str, int]] = []
        async with self._sessions() as session:
            transaction = await session.begin()
            try:
                now = store.utcnow()
                await self._plan_in(session, at, now)
                for delivery, address in await store.due_deliveries(session, now):
                    articles = await store.digest_articles(
                        session,
                        delivery.after_article_id,
                        delivery.upto_article_id,
                        address.subscriber.topics or (),
                    )
                    if articles and address.status == store.AddressStatus.ACTIVE:
                        due.append((address.email, delivery.period_key, len(articles)))
            finally:
                await transaction.rollback()
        return due

    async def release_dead_local_claims(self) -> int:
        """Claims of processes on this host that no longer run go back to the queue at once
        (a process elsewhere that died loses its claims when their lease runs out)."""
        host = processes.local_host()
        async with self._sessions() as session, session.begin():
            dead = [
                worker
                for worker in await store.claiming_workers(session, f"{host}:")
                if worker != self.worker and not processes.pid_alive(int(worker.split(":")[1]))
            ]
            return await store.release_claims(session, dead)

    async def run(
        self,
        at: datetime | None = None,
        progress: Progress | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> RunReport:
        """Plan the periods ended at `at` (now by default) and send everything due;
        `on_start` learns how many deliveries are due, `progress` each outcome."""
        async with self._lock:
            started = time.perf_counter()
            report = RunReport()
            if self.stopping.is_set():
                return report
            report.released = await self.release_dead_local_claims()
            report.periods, report.planned = await self.plan(at or datetime.now(UTC))
            if on_start is not None:
                async with self._sessions() as session:
                    on_start(await store.count_due(session, store.utcnow()))
            await self.send_due(report, progress)
            report.seconds = time.perf_counter() - started
            self.last_run = datetime.now(UTC)
            metrics.DIGEST_RUN_SECONDS.observe(report.seconds)
            level = logging.WARNING if report.problem() else logging.INFO
            log.log(level, report.summary(), extra={"digest_run": report.as_dict()})
            return report

    async def send_due(self, report: RunReport, progress: Progress | None = None) -> None:
        """Claim due rows batch by batch and send them until none is left or stopping."""
        started = time.perf_counter()
        try:
            await self._send_batches(report, progress)
        finally:
            report.send_seconds += time.perf_counter() - started

    async def _send_batches(self, report: RunReport, progress: Progress | None) -> None:
        sending = Sending(
            self._settings,
            self._sessions,
            self._transport,
            DigestRenderer(self._settings),
            self.worker,
            report,
            progress,
            self.stopping,
        )
        article_cache: dict[tuple[int, int, tuple[str, ...]], Sequence[store.Article]] = {}
        async with contextlib.AsyncExitStack() as recorders:
            # One sender per pooled SMTP connection, so waiting on one reply overlaps with
            # rendering and recording the next message; each records over a connection of
            # its own, held for the run.
            senders = [
                Sender(
                    sending,
                    await recorders.enter_async_context(
                        store.delivery_recorder(self._sessions, self.worker)
                    ),
                )
                for _ in range(self._concurrency)
            ]
            while not self.stopping.is_set():
                work = await self._claim(article_cache)
                if not work:
                    return
                claimed, finished = {row[0].id for row in work}, set[int]()
                try:
                    await asyncio.gather(*(sender.send(work, finished) for sender in senders))
                finally:
                    if claimed - finished:  # stopped, or an outcome could not be recorded
                        async with self._sessions() as session, session.begin():
                            report.released += await store.release_claims(session, [self.worker])

    async def _claim(
        self, article_cache: dict[tuple[int, int, tuple[str, ...]], Sequence[store.Article]]
    ) -> Work:
        """Claim the next batch of due rows and read them with their addresses and
        articles, in one transaction."""
        lease = timedelta(seconds=self._settings.digest_lease_seconds)
        work: Work = deque()
        async with self._sessions() as session, session.begin():
            claimed = await store.claim_deliveries(
                session, self.worker, store.utcnow(), self._settings.digest_batch_size, lease
            )
            if not claimed:
                return work
            for delivery, address in await store.deliveries_with_addresses(session, claimed):
                topics = tuple(address.subscriber.topics or ())
                cache_key = (delivery.after_article_id, delivery.upto_article_id, topics)
                if cache_key not in article_cache:
                    article_cache[cache_key] = await store.digest_articles(
                        session, *cache_key[:2], topics
                    )
                work.append((delivery, address, article_cache[cache_key]))
        return work

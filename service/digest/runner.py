"""The digest run: plans due periods into the delivery ledger, claims rows batch by
batch, renders, sends and records each outcome, and reports what it did.

Owns the send loop (the ledger's rows are `store`'s). Imports `config`, `store`,
`mailer`, `metrics`, `outcomes` and `digest.periods`, `digest.render`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import mailer, metrics, outcomes, processes, store
from service.config import Settings
from service.digest.periods import latest_period
from service.digest.render import DigestRenderer

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


Progress = Callable[[str], None]
Row = tuple[store.Delivery, store.Address, Sequence[store.Article]]
Work = deque[Row]
# A row's envelope and the articles it carries, or the outcome of a row not sent.
Composed = tuple[mailer.Envelope, int] | store.Outcome


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
        renderer = DigestRenderer(self._settings)
        article_cache: dict[tuple[int, int, tuple[str, ...]], Sequence[store.Article]] = {}
        lease = timedelta(seconds=self._settings.digest_lease_seconds)
        while not self.stopping.is_set():
            async with self._sessions() as session, session.begin():
                claimed = await store.claim_deliveries(
                    session, self.worker, store.utcnow(), self._settings.digest_batch_size, lease
                )
            if not claimed:
                return
            try:
                async with self._sessions() as session:
                    rows = await store.deliveries_with_addresses(session, claimed)
                    work: Work = deque()
                    for delivery, address in rows:
                        topics = tuple(address.subscriber.topics or ())
                        cache_key = (delivery.after_article_id, delivery.upto_article_id, topics)
                        if cache_key not in article_cache:
                            article_cache[cache_key] = await store.digest_articles(
                                session, *cache_key[:2], topics
                            )
                        work.append((delivery, address, article_cache[cache_key]))

                # One sender per pooled SMTP connection, so waiting on one reply overlaps
                # with rendering and recording the next message.
                await asyncio.gather(
                    *(
                        self._sender(work, renderer, report, progress)
                        for _ in range(self._concurrency)
                    )
                )
            finally:
                async with self._sessions() as session, session.begin():
                    report.released += await store.release_claims(session, [self.worker])

    async def _sender(
        self,
        work: Work,
        renderer: DigestRenderer,
        report: RunReport,
        progress: Progress | None,
    ) -> None:
        """Send rows from the shared `work` queue one by one, counting each outcome.

        A message's outcome is recorded while the next message is composed and its sender
        and recipient are handed to the relay; the next message's data goes out only once
        that record is committed, so no more than one message per connection is ever
        delivered and not recorded (the one a kill may duplicate).
        """
        async with store.delivery_recorder(self._sessions, self.worker) as recorder:
            halt = asyncio.Event()
            rows = asyncio.ensure_future(
                self._send_rows(recorder, work, renderer, report, progress, halt)
            )
            try:
                await asyncio.shield(rows)
            except asyncio.CancelledError:
                # The message being handed over is finished and recorded before its
                # claim may be released; then the sender stops.
                halt.set()
                await rows
                raise

    async def _send_rows(
        self,
        recorder: store.OutcomeRecorder,
        work: Work,
        renderer: DigestRenderer,
        report: RunReport,
        progress: Progress | None,
        halt: asyncio.Event,
    ) -> None:
        recording: list[asyncio.Task[None]] = []  # the newest record, once there is one
        ahead: list[tuple[Row, Composed]] = []  # the next row, composed already
        try:
            while (ahead or work) and not (self.stopping.is_set() or halt.is_set()):
                row, composed = ahead.pop() if ahead else (work.popleft(), None)
                await self._send_one(
                    recorder, recording, (row, composed), ahead, work, renderer, report, progress
                )
        finally:
            if recording:  # before the batch's claims are handed back
                await recording[0]

    async def _send_one(
        self,
        recorder: store.OutcomeRecorder,
        recording: list[asyncio.Task[None]],
        taken: tuple[Row, Composed | None],
        ahead: list[tuple[Row, Composed]],
        work: Work,
        renderer: DigestRenderer,
        report: RunReport,
        progress: Progress | None,
    ) -> None:
        """Send a row, compose the next one while the relay answers, and start recording
        the outcome once the previous row's record is done."""
        row, composed = taken
        if composed is None:
            composed = await self._compose(renderer, row)
        previous = recording[0] if recording else None
        if isinstance(composed, store.Outcome):
            outcome = composed
        else:
            sending = asyncio.ensure_future(self._send(row, *composed, previous))
            await asyncio.sleep(0)  # the relay gets MAIL FROM: its reply takes a while
            if work:
                following = work.popleft()
                ahead.append((following, await self._compose(renderer, following)))
            outcome = await sending
        delivery, address, _ = row
        recording[:] = [
            asyncio.ensure_future(
                self._record(recorder, previous, delivery, address, outcome, report, progress)
            )
        ]

    async def _record(
        self,
        recorder: store.OutcomeRecorder,
        previous: asyncio.Task[None] | None,
        delivery: store.Delivery,
        address: store.Address,
        outcome: store.Outcome,
        report: RunReport,
        progress: Progress | None,
    ) -> None:
        """Record one row's outcome after the previous row's, and count it; never raises."""
        if previous is not None:
            await previous
        label = outcome.label
        try:
            if outcome.permanent_failure or (
                outcome.status is store.DeliveryStatus.SENT and address.consecutive_failures
            ):
                await self._finish_with_address(delivery, address, outcome)
            else:
                await recorder.finish(delivery.id, outcome, store.utcnow())
        except Exception:
            # Recording the outcome failed: the row goes back to the queue with the
            # batch's claims; the other rows go on.
            log.exception("delivery %s to %r could not be recorded", delivery.id, address.email)
            label = "failed"
        report.record(delivery.id, label)
        metrics.MESSAGES.labels(label).inc()
        if progress:
            progress(label)

    async def _finish_with_address(
        self, delivery: store.Delivery, address: store.Address, outcome: store.Outcome
    ) -> None:
        """Record the outcome and the address's changed failure streak in one transaction."""
        async with self._sessions() as session, session.begin():
            await store.note_address_outcome(
                session,
                address.id,
                permanent_failure=outcome.permanent_failure,
                bounce_after=self._settings.bounce_after_failures,
            )
            await store.finish_delivery(session, delivery.id, self.worker, outcome, store.utcnow())

    async def _compose(self, renderer: DigestRenderer, row: Row) -> Composed:
        """The envelope of one row's digest and the articles it carries; or the outcome of
        a row that is not sent (skipped, or its digest cannot be composed). It lets the
        loop run between rendering and composing: a relay's reply to the message being
        sent meanwhile waits for half of it only."""
        delivery, address, articles = row
        if address.status != store.AddressStatus.ACTIVE:
            superseded = store.DeliveryStatus.SUPERSEDED
            return outcomes.skipped(superseded, f"address {address.status}")
        if not articles:
            return outcomes.skipped(store.DeliveryStatus.EMPTY, article_count=0)
        try:
            period = store.Period.of(delivery)
            digest = renderer.render(period, address, articles)
            await asyncio.sleep(0)
            envelope = renderer.envelope(period, delivery.id, address, digest, store.utcnow())
        except Exception as exc:  # this row fails alone
            return self._failed(delivery, address, exc)
        # The row's window counts as carried, also the articles beyond the cap.
        return envelope, digest.carried

    async def _send(
        self,
        row: Row,
        envelope: mailer.Envelope,
        carried: int,
        before_data: asyncio.Task[None] | None,
    ) -> store.Outcome:
        """Send one row's envelope (its data after `before_data`, the previous row's
        record); the outcome to record."""
        try:
            reply = await self._transport.send(envelope, before_data=before_data)
        except Exception as exc:  # this row fails alone
            return self._failed(row[0], row[1], exc)
        return outcomes.sent(reply, envelope.message_id, article_count=carried)

    def _failed(
        self, delivery: store.Delivery, address: store.Address, exc: Exception
    ) -> store.Outcome:
        """The outcome of a row whose digest could not be composed or sent."""
        if not isinstance(exc, mailer.SendError):
            log.error("digest %s to %r cannot be sent", delivery.id, address.email, exc_info=exc)
        return outcomes.after_error(
            self._settings,
            exc,
            attempts=delivery.attempts,
            uncertain_attempts=delivery.uncertain_attempts,
            now=store.utcnow(),
        )

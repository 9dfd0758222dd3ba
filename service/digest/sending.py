"""Sending over one SMTP connection: compose each claimed row's digest, hand it to the
transport, and record its outcome in the ledger, overlapping the three.

Owns no data (the rows are the ledger's, `store`'s). Imports `config`, `store`, `mailer`,
`metrics`, `outcomes` and `digest.render`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import mailer, metrics, outcomes, store
from service.config import Settings
from service.digest.render import DigestRenderer

# The package's name: operators filter the run's log lines by it.
log = logging.getLogger("service.digest")

Progress = Callable[[str], None]
Row = tuple[store.Delivery, store.Address, Sequence[store.Article]]
Work = deque[Row]
# A row's envelope and the articles it carries, or the outcome of a row not sent.
Composed = tuple[mailer.Envelope, int] | store.Outcome


class Tally(Protocol):
    """Where a run counts outcomes (`runner.RunReport`)."""

    def record(self, delivery_id: int, outcome: str) -> None: ...


@dataclass
class Sending:
    """What the senders of one run share: where they send, render and record, and where
    they count and report each outcome."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    transport: mailer.Transport
    renderer: DigestRenderer
    worker: str
    tally: Tally
    progress: Progress | None
    stopping: asyncio.Event


class Sender:
    """Sends rows from a shared queue over one SMTP connection, one message at a time.

    Per message, while the relay answers MAIL FROM and RCPT TO, the sender records the
    previous message's outcome and composes the next message; the message's data goes out
    only once the previous record is committed, so no more than one message per connection
    is ever delivered and not recorded (the one a kill may duplicate).
    """

    def __init__(self, sending: Sending, recorder: store.OutcomeRecorder) -> None:
        self._sending = sending
        self._recorder = recorder
        # The outcome sent last and not yet recorded.
        self._unrecorded: tuple[Row, store.Outcome] | None = None

    async def send(self, work: Work, finished: set[int]) -> None:
        """Send from `work` until it is empty or the run stops; `finished` gets the id of
        each row whose outcome is recorded (or whose claim was lost meanwhile)."""
        halt = asyncio.Event()
        rows = asyncio.ensure_future(self._send_rows(work, finished, halt))
        try:
            await asyncio.shield(rows)
        except asyncio.CancelledError:
            # The message being handed over is finished and recorded before its claim may
            # be released; then the sender stops.
            halt.set()
            await rows
            raise

    async def _send_rows(self, work: Work, finished: set[int], halt: asyncio.Event) -> None:
        stopping = self._sending.stopping
        ahead: tuple[Row, Composed] | None = None  # the next row, composed already
        try:
            while (ahead or work) and not (stopping.is_set() or halt.is_set()):
                row, composed = ahead if ahead else (work.popleft(), None)
                if composed is None:
                    composed = await self._compose(row)
                ahead = None
                if isinstance(composed, store.Outcome):  # not sent: skipped or failed
                    await self._record_unrecorded(finished)
                    self._unrecorded = (row, composed)
                    continue
                recorded = asyncio.get_running_loop().create_future()
                sending = asyncio.ensure_future(self._send(row, *composed, recorded))
                await asyncio.sleep(0)  # MAIL FROM goes out: its reply takes a while
                try:
                    await self._record_unrecorded(finished)
                finally:
                    recorded.set_result(None)
                if work:
                    following = work.popleft()
                    ahead = (following, await self._compose(following))
                self._unrecorded = (row, await sending)
        finally:
            await self._record_unrecorded(finished)  # before the batch's claims go back

    async def _record_unrecorded(self, finished: set[int]) -> None:
        if self._unrecorded is not None:
            (delivery, address, _), outcome = self._unrecorded
            self._unrecorded = None
            if await self._record(delivery, address, outcome):
                finished.add(delivery.id)

    async def _record(
        self, delivery: store.Delivery, address: store.Address, outcome: store.Outcome
    ) -> bool:
        """Record one row's outcome and count it; whether it is recorded (never raises)."""
        label = outcome.label
        recorded = True
        try:
            if outcome.permanent_failure or (
                outcome.status is store.DeliveryStatus.SENT and address.consecutive_failures
            ):
                await self._finish_with_address(delivery, address, outcome)
            else:
                await self._recorder.finish(delivery.id, outcome, store.utcnow())
        except Exception:
            # Recording the outcome failed: the row goes back to the queue with the
            # batch's claims; the other rows go on.
            log.exception("delivery %s to %r could not be recorded", delivery.id, address.email)
            label, recorded = "failed", False
        self._sending.tally.record(delivery.id, label)
        metrics.MESSAGES.labels(label).inc()
        if self._sending.progress:
            self._sending.progress(label)
        return recorded

    async def _finish_with_address(
        self, delivery: store.Delivery, address: store.Address, outcome: store.Outcome
    ) -> None:
        """Record the outcome and the address's changed failure streak in one transaction."""
        settings = self._sending.settings
        async with self._sending.sessions() as session, session.begin():
            await store.note_address_outcome(
                session,
                address.id,
                permanent_failure=outcome.permanent_failure,
                bounce_after=settings.bounce_after_failures,
            )
            await store.finish_delivery(
                session, delivery.id, self._sending.worker, outcome, store.utcnow()
            )

    async def _compose(self, row: Row) -> Composed:
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
        renderer = self._sending.renderer
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
        before_data: asyncio.Future[None],
    ) -> store.Outcome:
        """Send one row's envelope (its data after `before_data`, the previous row's
        record); the outcome to record."""
        try:
            reply = await self._sending.transport.send(envelope, before_data=before_data)
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
            self._sending.settings,
            exc,
            attempts=delivery.attempts,
            uncertain_attempts=delivery.uncertain_attempts,
            now=store.utcnow(),
        )

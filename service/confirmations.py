"""Confirmations: sends the queued confirmation mails of double opt-in.

A subscription request only queues its mail (`store.enqueue_confirmation`); this sender,
run by the scheduler, claims due rows, composes each mail with a fresh link, sends it and
records the outcome with the ledger's retry rules (`outcomes`). So the request never waits
for the relay, a relay that is down delays the mail instead of losing it, and the answer
takes as long for an active address as for a new one. Owns no data; imports `config`,
`store`, `mailer`, `outcomes` and `subscribers`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import mailer, outcomes, processes, store, subscribers
from service.config import Settings

log = logging.getLogger(__name__)

_BATCH = 50


@dataclass
class ConfirmationReport:
    sent: int = 0
    skipped: int = 0  # the address was confirmed meanwhile
    retrying: int = 0
    failed: int = 0
    uncertain: int = 0


class ConfirmationSender:
    """Sends due confirmation mails one at a time, claim by claim."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        transport: mailer.Transport,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._transport = transport
        self._tokens = subscribers.Tokens(settings)
        self.worker = f"{processes.local_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:confirm"
        self.stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._woken: set[asyncio.Task[ConfirmationReport]] = set()
        self._pass_queued = False

    def wake(self) -> None:
        """Send what is due in the background, now or right after the run going.

        A pass that has not claimed yet will see every row committed before this call,
        so one such pass waiting is enough however many requests wake the sender."""
        if self._pass_queued or self.stopping.is_set():
            return
        self._pass_queued = True
        task = asyncio.get_running_loop().create_task(self._woken_run())
        self._woken.add(task)
        task.add_done_callback(self._woken.discard)

    async def _woken_run(self) -> ConfirmationReport:
        try:
            return await self.run()
        except Exception:
            log.exception("sending confirmation mails failed; the next tick retries")
            return ConfirmationReport()

    async def stop(self) -> None:
        """Finish the mail in flight, hand back unsent claims, and return when idle."""
        self.stopping.set()
        async with self._lock:
            log.debug("confirmation sender %s stopped", self.worker)
        await asyncio.gather(*self._woken)

    async def run(self) -> ConfirmationReport:
        """Send every confirmation mail that is due now."""
        report = ConfirmationReport()
        async with self._lock:
            self._pass_queued = False
            lease = timedelta(seconds=self._settings.digest_lease_seconds)
            while not self.stopping.is_set():
                async with self._sessions() as session, session.begin():
                    claimed = await store.claim_confirmations(
                        session, self.worker, store.utcnow(), _BATCH, lease
                    )
                if not claimed:
                    break
                try:
                    async with self._sessions() as session:
                        rows = await store.confirmations_with_addresses(session, claimed)
                    for mail, address in rows:
                        if self.stopping.is_set():
                            break
                        # A mail being handed to the relay is finished and recorded even
                        # when the process is told to stop meanwhile.
                        label = await outcomes.finish_even_if_cancelled(self._send(mail, address))
                        setattr(report, label, getattr(report, label) + 1)
                finally:
                    async with self._sessions() as session, session.begin():
                        await store.release_confirmation_claims(session, [self.worker])
        if report != ConfirmationReport():
            log.info("confirmation mails: %s", report)
        return report

    async def _send(self, mail: store.ConfirmationMail, address: store.Address) -> str:
        async def finish(outcome: store.Outcome) -> str:
            async with self._sessions() as session, session.begin():
                await store.finish_confirmation(
                    session, mail.id, self.worker, outcome, store.utcnow()
                )
            return outcome.label

        superseded = store.DeliveryStatus.SUPERSEDED
        if address.status == store.AddressStatus.ACTIVE:
            return await finish(outcomes.skipped(superseded, "address already confirmed"))
        async with self._sessions() as session:
            record = await store.open_consent(session, address.id)
        if record is None:
            reason = "no open consent request (confirmed or withdrawn meanwhile)"
            return await finish(outcomes.skipped(superseded, reason))
        try:
            envelope = subscribers.confirmation_mail(
                self._settings, self._tokens, address, record, store.utcnow()
            )
            reply = await self._transport.send(envelope)
        except Exception as exc:
            if not isinstance(exc, mailer.SendError):
                log.exception("confirmation mail %s to %r cannot be sent", mail.id, address.email)
            outcome = outcomes.after_error(
                self._settings,
                exc,
                attempts=mail.attempts,
                uncertain_attempts=mail.uncertain_attempts,
                now=store.utcnow(),
            )
            if outcome.status is not store.DeliveryStatus.PENDING:
                log.warning(
                    "confirmation mail to %r %s: %s", address.email, outcome.status, outcome.reply
                )
            return await finish(outcome)
        return await finish(outcomes.sent(reply, envelope.message_id))

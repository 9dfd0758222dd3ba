"""The transports: `smtp` (aiosmtplib, a pool of reused connections, an optional rate
limit) and `file` (an outbox folder of .eml files). Sending errors are classified as
temporary (retry), permanent, or uncertain (`mailer.errors`).

Imports `config`, `metrics` and `mailer.errors`, `mailer.wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol

import aiosmtplib

from service import metrics
from service.config import Settings
from service.mailer.errors import (
    PermanentSendError,
    SendError,
    TemporarySendError,
    UncertainSendError,
)
from service.mailer.wire import Envelope


class Transport(Protocol):
    async def send(self, envelope: Envelope, before_data: Awaitable[object] | None = None) -> str:
        """Deliver the bytes; return the server's reply or raise a `SendError`.

        `before_data` is awaited once the relay has taken the recipient, before the message
        itself is handed over: a sender records the previous message meanwhile, so that no
        more than one message per connection is ever delivered and not yet recorded."""

    async def close(self) -> None: ...


class FileTransport:
    """Writes each message as an .eml file into the outbox folder (no mail server needed)."""

    def __init__(self, outbox: Path) -> None:
        self._outbox = outbox

    async def send(self, envelope: Envelope, before_data: Awaitable[object] | None = None) -> str:
        if before_data is not None:
            await before_data
        self._outbox.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", envelope.message_id.strip("<>"))
        target = self._outbox / f"{name}.eml"
        temporary = target.with_suffix(".tmp")
        temporary.write_bytes(envelope.data)
        os.replace(temporary, target)
        return f"250 written to {target}"

    async def close(self) -> None:
        return None


class SmtpTransport:
    """aiosmtplib with a pool of reused connections and an optional rate limit."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for _ in range(settings.smtp_pool_size):
            self._pool.put_nowait(self._client())
        self._interval = 1 / settings.smtp_max_per_second if settings.smtp_max_per_second else 0
        self._next_slot = 0.0
        self._rate_lock = asyncio.Lock()

    def _client(self) -> aiosmtplib.SMTP:
        settings = self._settings
        return aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            use_tls=settings.smtp_security == "tls",
            start_tls=True if settings.smtp_security == "starttls" else False,
            username=settings.smtp_username or None,
            password=settings.smtp_password.get_secret_value() or None,
            timeout=settings.smtp_timeout,
            cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
        )

    async def _wait_for_slot(self) -> None:
        if not self._interval:
            return
        async with self._rate_lock:
            now = time.monotonic()
            if self._next_slot > now:
                await asyncio.sleep(self._next_slot - now)
            self._next_slot = max(now, self._next_slot) + self._interval

    async def send(self, envelope: Envelope, before_data: Awaitable[object] | None = None) -> str:
        await self._wait_for_slot()
        client = await self._pool.get()
        healthy = False
        try:
            if not client.is_connected:
                await client.connect()
            with metrics.SMTP_SEND_SECONDS.time():
                reply = await self._transaction(client, envelope, before_data)
            healthy = True
            return reply
        except aiosmtplib.SMTPResponseException as exc:
            healthy = client.is_connected
            raise _classify(envelope.recipient, exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TemporarySendError(envelope.recipient, 0, f"connection: {exc}") from exc
        except SendError:
            healthy = client.is_connected
            raise
        finally:
            if not healthy:
                with contextlib.suppress(Exception):
                    client.close()
                client = self._client()
            self._pool.put_nowait(client)

    async def _transaction(
        self,
        client: aiosmtplib.SMTP,
        envelope: Envelope,
        before_data: Awaitable[object] | None = None,
    ) -> str:
        """MAIL, RCPT and DATA, each command with the command timeout except the wait for
        the reply to the end of the message, which gets `smtp_data_timeout`; a timeout
        there is `UncertainSendError`. (aiosmtplib waits for the 354 and the final reply
        with one timeout, so a relay that stalls before 354 for that long counts too.)"""
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        options, encoding = [], "ascii"
        if envelope.smtputf8:
            if not client.supports_extension("smtputf8"):
                raise PermanentSendError(
                    envelope.recipient,
                    0,
                    "the relay does not offer SMTPUTF8, which this address's non-ASCII "
                    "local part needs",
                )
            options, encoding = ["SMTPUTF8", "BODY=8BITMIME"], "utf-8"
        try:
            await client.mail(envelope.sender, options=options, encoding=encoding)
            await client.rcpt(envelope.recipient, encoding=encoding)
        except aiosmtplib.SMTPResponseException:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.rset()
            raise
        if before_data is not None:
            await before_data
        try:
            response = await client.data(envelope.data, timeout=self._settings.smtp_data_timeout)
        except aiosmtplib.SMTPTimeoutError as exc:
            raise UncertainSendError(
                envelope.recipient,
                0,
                f"no reply within {self._settings.smtp_data_timeout:g}s after the message "
                "was sent: it may have been delivered",
            ) from exc
        except aiosmtplib.SMTPResponseException:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.rset()
            raise
        return response.message

    async def close(self) -> None:
        while not self._pool.empty():
            client = self._pool.get_nowait()
            if client.is_connected:
                with contextlib.suppress(Exception):
                    await client.quit()


def _classify(recipient: str, code: int, reply: str) -> SendError:
    if 500 <= code < 600:
        return PermanentSendError(recipient, code, reply)
    return TemporarySendError(recipient, code, reply)


def create_transport(settings: Settings) -> Transport:
    if settings.mailer == "smtp":
        return SmtpTransport(settings)
    return FileTransport(settings.outbox_dir)

"""Mailer: composes MIME messages and hands their bytes to a transport.

Owns the wire format of every mail (headers, folding, DKIM) and the two transports: `smtp`
(aiosmtplib, a pool of reused connections, an optional rate limit) and `file` (an outbox
folder of .eml files). Sending errors are classified as temporary (retry) or permanent.
Imports `config`, `errors` and `metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib

from service import metrics
from service.config import Settings
from service.errors import PartnerpostError

log = logging.getLogger(__name__)

# Headers whose value is a list of <URL> entries; see `MailPolicy`.
URL_LIST_HEADERS = frozenset({"list-unsubscribe", "list-archive", "list-help", "list-post"})
_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x1f\x7f]+")


class MailPolicy(EmailPolicy):
    """The SMTP policy, except that URL-list headers fold only between their entries.

    The default folding may turn a long unbreakable URL into RFC 2047 encoded-words, and
    mail clients then ignore List-Unsubscribe altogether (no unsubscribe button).
    """

    def _fold_url_list(self, name: str, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        return f"{name}: " + ("," + self.linesep + " ").join(entries) + self.linesep

    def fold(self, name: str, value: str) -> str:
        if name.lower() in URL_LIST_HEADERS:
            return self._fold_url_list(name, value)
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in URL_LIST_HEADERS:
            return self._fold_url_list(name, value).encode("ascii")
        return super().fold_binary(name, value)


POLICY = MailPolicy(linesep="\r\n")


class SendError(PartnerpostError):
    """A message was not accepted; `code` is the SMTP reply code (0 without one)."""

    def __init__(self, recipient: str, code: int, reply: str) -> None:
        self.recipient = recipient
        self.code = code
        self.reply = reply
        super().__init__(f"sending to {recipient!r} failed: {code} {reply}".strip())


class TemporarySendError(SendError, ConnectionError):
    """Worth retrying later: a 4xx reply, a dropped connection, a timeout."""


class PermanentSendError(SendError):
    """Not worth retrying: a 5xx reply."""


def header_safe(value: str) -> str:
    """One line of text fit for a header: control characters (CR, LF) become spaces."""
    return _UNSAFE_IN_HEADER.sub(" ", value).strip()


def mailbox(display_name: str, address: str) -> Address:
    local, _, domain = address.rpartition("@")
    return Address(display_name=header_safe(display_name), username=local, domain=domain)


def compose(
    settings: Settings,
    *,
    to_name: str,
    to_address: str,
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    date: Any,
    extra_headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A multipart/alternative message (text first, HTML preferred) with our headers."""
    message = EmailMessage(policy=POLICY)
    from_name, from_address = parseaddr(settings.mail_from)
    message["From"] = mailbox(from_name, from_address)
    message["To"] = mailbox(to_name, to_address)
    message["Subject"] = header_safe(subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    for name, value in (extra_headers or {}).items():
        message[name] = header_safe(value)
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if html is not None:
        message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


def message_id(settings: Settings, local_part: str) -> str:
    return f"<{local_part}@{settings.mail_domain}>"


def to_bytes(settings: Settings, message: EmailMessage) -> bytes:
    """The message as sent, DKIM-signed when a key is configured."""
    data = message.as_bytes(policy=POLICY)
    if settings.dkim_selector and settings.dkim_private_key_file is not None:
        import dkim

        signature = dkim.sign(
            data,
            settings.dkim_selector.encode(),
            settings.mail_domain.encode(),
            settings.dkim_private_key_file.read_bytes(),
            include_headers=[
                b"from",
                b"to",
                b"subject",
                b"date",
                b"message-id",
                b"list-unsubscribe",
                b"list-unsubscribe-post",
                b"list-id",
            ],
        )
        data = signature + data
    return data


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipient: str
    data: bytes
    message_id: str


class Transport(Protocol):
    async def send(self, envelope: Envelope) -> str:
        """Deliver the bytes; return the server's reply or raise a `SendError`."""

    async def close(self) -> None: ...


class FileTransport:
    """Writes each message as an .eml file into the outbox folder (no mail server needed)."""

    def __init__(self, outbox: Path) -> None:
        self._outbox = outbox

    async def send(self, envelope: Envelope) -> str:
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
            password=settings.smtp_password or None,
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

    async def send(self, envelope: Envelope) -> str:
        await self._wait_for_slot()
        client = await self._pool.get()
        healthy = False
        try:
            if not client.is_connected:
                await client.connect()
            with metrics.SMTP_SEND_SECONDS.time():
                _refused, reply = await client.sendmail(
                    envelope.sender, [envelope.recipient], envelope.data
                )
            healthy = True
            return reply
        except aiosmtplib.SMTPRecipientsRefused as exc:
            healthy = client.is_connected
            refusal = exc.recipients[0]
            raise _classify(envelope.recipient, refusal.code, refusal.message) from exc
        except aiosmtplib.SMTPResponseException as exc:
            healthy = client.is_connected
            raise _classify(envelope.recipient, exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TemporarySendError(envelope.recipient, 0, f"connection: {exc}") from exc
        finally:
            if not healthy:
                with contextlib.suppress(Exception):
                    client.close()
                client = self._client()
            self._pool.put_nowait(client)

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


def envelope_sender(settings: Settings) -> str:
    return parseaddr(settings.mail_from)[1]

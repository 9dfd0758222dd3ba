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
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
from email.utils import format_datetime, formataddr, parseaddr
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


class MailPolicy(Compat32):
    """compat32 for SMTP, except that URL-list headers fold only between their entries.

    compat32 rather than the default policy: it writes headers as given instead of parsing
    each one into an object again, which made composing the largest cost of a digest run.
    The explicit folding keeps a long unbreakable URL on one line: a policy that turns it
    into RFC 2047 encoded-words makes mail clients ignore List-Unsubscribe altogether.
    """

    def _fold_url_list(self, name: str, value: str) -> str:
        entries = [entry.strip() for entry in str(value).split(",") if entry.strip()]
        return f"{name}: " + ("," + self.linesep + " ").join(entries) + self.linesep

    def fold(self, name: str, value: Any) -> str:
        if name.lower() in URL_LIST_HEADERS:
            return self._fold_url_list(name, value)
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: Any) -> bytes:
        if name.lower() in URL_LIST_HEADERS:
            return self._fold_url_list(name, value).encode("ascii")
        folded: bytes = super().fold_binary(name, value)
        return folded


POLICY = MailPolicy(linesep="\r\n")
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


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


def _mailbox(display_name: str, address: str) -> str:
    name = header_safe(display_name)
    if "=?" in name:  # would be read as an encoded-word; encoded, it reads as itself
        return f"{Charset('utf-8').header_encode(name)} <{address}>"  # as formataddr does
    return formataddr((name, address), charset="utf-8")


def _text_part(text: str, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype, policy=POLICY)
    part.set_payload(text, _UTF8_QP)  # quoted-printable: readable, 7-bit safe
    return part


def _text_header(value: str) -> str | Header:
    value = header_safe(value)
    return value if value.isascii() else Header(value, "utf-8")


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
) -> Message[Any, Any]:
    """A multipart/alternative message (text first, HTML preferred) with our headers;
    every header value is made one line, so no input can add a header."""
    message: Message[Any, Any] = Message(policy=POLICY)
    from_name, from_address = parseaddr(settings.mail_from)
    message["From"] = _mailbox(from_name, from_address)
    message["To"] = _mailbox(to_name, to_address)
    message["Subject"] = _text_header(subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    for name, value in (extra_headers or {}).items():
        message[name] = _text_header(value)
    message["MIME-Version"] = "1.0"
    message["Content-Type"] = "multipart/alternative"
    message.attach(_text_part(text, "plain"))
    if html is not None:
        message.attach(_text_part(html, "html"))
    return message


def message_id(settings: Settings, local_part: str) -> str:
    return f"<{local_part}@{settings.mail_domain}>"


def to_bytes(settings: Settings, message: Message[Any, Any]) -> bytes:
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

"""Mailer: composes MIME messages and hands their bytes to a transport.

Owns the wire format of every mail (headers, folding, DKIM, international addresses) and
the two transports: `smtp` (aiosmtplib, a pool of reused connections, an optional rate
limit) and `file` (an outbox folder of .eml files). Sending errors are classified as
temporary (retry), permanent, or uncertain (the relay got the whole message but did not
answer in time: it may have been delivered). Imports `config`, `errors` and `metrics`.
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
from email_validator import EmailNotValidError, validate_email

from service import metrics
from service.config import Settings
from service.errors import PartnerpostError
from service.text import without_controls

log = logging.getLogger(__name__)

# Headers whose value is a list of <URL> entries; see `MailPolicy`.
URL_LIST_HEADERS = frozenset({"list-unsubscribe", "list-archive", "list-help", "list-post"})
# Headers that carry a mailbox; one with a UTF-8 local part is written as raw UTF-8.
ADDRESS_HEADERS = frozenset({"from", "to", "cc", "reply-to", "sender"})


class MailPolicy(Compat32):
    """compat32 for SMTP, except that URL-list headers fold only between their entries.

    compat32 rather than the default policy: it writes headers as given instead of parsing
    each one into an object again, which made composing the largest cost of a digest run.
    The explicit folding keeps a long unbreakable URL on one line: a policy that turns it
    into RFC 2047 encoded-words makes mail clients ignore List-Unsubscribe altogether.
    An address header with a UTF-8 local part (only ever sent with SMTPUTF8) is written as
    raw UTF-8 (RFC 6532): compat32 would turn the whole mailbox into an encoded-word,
    which is no address at all.
    """

    @staticmethod
    def _is_utf8_mailbox(name: str, value: Any) -> bool:
        return name.lower() in ADDRESS_HEADERS and isinstance(value, str) and not value.isascii()

    def _fold_url_list(self, name: str, value: str) -> str:
        entries = [entry.strip() for entry in str(value).split(",") if entry.strip()]
        return f"{name}: " + ("," + self.linesep + " ").join(entries) + self.linesep

    def fold(self, name: str, value: Any) -> str:
        if name.lower() in URL_LIST_HEADERS:
            return self._fold_url_list(name, value)
        if self._is_utf8_mailbox(name, value):
            return f"{name}: {value}{self.linesep}"
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: Any) -> bytes:
        if name.lower() in URL_LIST_HEADERS:
            return self._fold_url_list(name, value).encode("ascii")
        if self._is_utf8_mailbox(name, value):
            return f"{name}: {value}{self.linesep}".encode()
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
    """Not worth retrying: a 5xx reply, or an address this relay cannot take."""


class UncertainSendError(SendError):
    """The relay received the whole message but no reply to its end in time: it may have
    been delivered, so sending it again may make a copy (RFC 5321 6.1, RFC 1047)."""


def header_safe(value: str) -> str:
    """One line of text fit for a header: control characters (CR, LF) become spaces."""
    return without_controls(value)


@dataclass(frozen=True)
class WireAddress:
    """An address as it goes on the wire: the domain IDNA-encoded (xn--); `smtputf8` when
    the local part is not ASCII and the relay must offer SMTPUTF8 (RFC 6531)."""

    address: str
    smtputf8: bool


def wire_address(address: str) -> WireAddress:
    """The form of `address` to send to; `PermanentSendError` if it has none."""
    if address.isascii():
        return WireAddress(address, False)
    try:
        parts = validate_email(address, check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError as exc:
        raise PermanentSendError(address, 0, f"address cannot be sent to: {exc}") from exc
    return WireAddress(f"{parts.local_part}@{parts.ascii_domain}", parts.smtputf8)


_STAND_IN = "stand-in@invalid"


def _mailbox(header: str, display_name: str, address: str) -> str | Header:
    """`Name <address>` with the address in its wire form (`wire_address`); a non-ASCII
    name, or one that looks like an encoded-word, becomes encoded-words of at most 75
    characters (formataddr makes it one word of any length)."""
    name = header_safe(display_name)
    wire = wire_address(address).address
    if name.isascii() and "=?" not in name:
        # formataddr quotes the name as needed but refuses a non-ASCII address, so it
        # formats a stand-in that the wire form (UTF-8 under SMTPUTF8) then replaces.
        head, _, tail = formataddr((name, _STAND_IN)).rpartition(_STAND_IN)
        return head + wire + tail
    mailbox = Header(name, "utf-8", header_name=header)
    if wire.isascii():
        mailbox.append(f"<{wire}>", "us-ascii")
        return mailbox
    return f"{mailbox.encode()} <{wire}>"


def _text_part(text: str, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype, policy=POLICY)
    part.set_payload(text, _UTF8_QP)  # quoted-printable: readable, 7-bit safe
    return part


def _text_header(name: str, value: str) -> str | Header:
    # header_name: Header counts "Subject: " into the first line; without it the first
    # encoded-word grows to 77 characters (RFC 2047 allows 75).
    value = header_safe(value)
    return value if value.isascii() else Header(value, "utf-8", header_name=name)


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
    message["From"] = _mailbox("From", from_name, from_address)
    message["To"] = _mailbox("To", to_name, to_address)
    message["Subject"] = _text_header("Subject", subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    for name, value in (extra_headers or {}).items():
        message[name] = _text_header(name, value)
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
    smtputf8: bool = False  # the recipient's local part is not ASCII


def envelope(
    settings: Settings, message: Message[Any, Any], recipient: str, message_id: str
) -> Envelope:
    """What a transport sends: the message's bytes to the wire form of `recipient`."""
    wire = wire_address(recipient)
    return Envelope(
        envelope_sender(settings),
        wire.address,
        to_bytes(settings, message),
        message_id,
        smtputf8=wire.smtputf8,
    )


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

    async def send(self, envelope: Envelope) -> str:
        await self._wait_for_slot()
        client = await self._pool.get()
        healthy = False
        try:
            if not client.is_connected:
                await client.connect()
            with metrics.SMTP_SEND_SECONDS.time():
                reply = await self._transaction(client, envelope)
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

    async def _transaction(self, client: aiosmtplib.SMTP, envelope: Envelope) -> str:
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


def envelope_sender(settings: Settings) -> str:
    return parseaddr(settings.mail_from)[1]

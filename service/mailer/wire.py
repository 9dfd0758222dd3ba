"""The wire format of every mail: headers (folding, encoded-words, international
addresses), the multipart/alternative message, its bytes (DKIM-signed when a key is set) and
the envelope a transport sends.

Imports `config`, `text` and `mailer.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email

from service.config import Settings
from service.mailer.errors import PermanentSendError
from service.text import without_controls

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

    def _as_is(self, name: str, value: Any) -> bool:
        """Whether compat32 writes the value unchanged: printable ASCII, no whitespace at
        either end, and the line short enough (a shortcut past its Header machinery,
        which cost more than the rest of a digest's headers; a test compares the two)."""
        return (
            isinstance(value, str)
            and value.isascii()
            and value.isprintable()
            and value == value.strip()
            and 0 < len(name) + 2 + len(value) <= (self.max_line_length or 0)
        )

    def fold(self, name: str, value: Any) -> str:
        if name.lower() in URL_LIST_HEADERS:
            return self._fold_url_list(name, value)
        if self._is_utf8_mailbox(name, value) or self._as_is(name, value):
            return f"{name}: {value}{self.linesep}"
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: Any) -> bytes:
        if name.lower() in URL_LIST_HEADERS:
            return self._fold_url_list(name, value).encode("ascii")
        if self._is_utf8_mailbox(name, value) or self._as_is(name, value):
            return f"{name}: {value}{self.linesep}".encode()
        folded: bytes = super().fold_binary(name, value)
        return folded


POLICY = MailPolicy(linesep="\r\n")
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


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


@lru_cache(maxsize=8)
def sender(mail_from: str) -> tuple[str, str]:
    """(display name, address) of PARTNERPOST_MAIL_FROM, parsed once."""
    return parseaddr(mail_from)


def mailbox(header: str, display_name: str, address: str) -> str | Header:
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


def text_part(text: str, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype, policy=POLICY)
    part.set_payload(text, _UTF8_QP)  # quoted-printable: readable, 7-bit safe
    return part


def text_header(name: str, value: str) -> str | Header:
    # header_name: Header counts "Subject: " into the first line; without it the first
    # encoded-word grows to 77 characters (RFC 2047 allows 75).
    value = header_safe(value)
    return value if value.isascii() else Header(value, "utf-8", header_name=name)


def headers(
    settings: Settings,
    *,
    to_name: str,
    to_address: str,
    subject: str,
    message_id: str,
    date: Any,
    extra_headers: dict[str, str] | None = None,
) -> list[tuple[str, str | Header]]:
    """The headers of a message in their order, before its MIME headers; every value is
    made one line, so no input can add a header."""
    from_name, from_address = sender(settings.mail_from)
    values: list[tuple[str, str | Header]] = [
        ("From", mailbox("From", from_name, from_address)),
        ("To", mailbox("To", to_name, to_address)),
        ("Subject", text_header("Subject", subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", message_id),
    ]
    values += [(name, text_header(name, value)) for name, value in (extra_headers or {}).items()]
    return values


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
    """A multipart/alternative message (text first, HTML preferred) with our headers."""
    message: Message[Any, Any] = Message(policy=POLICY)
    for name, value in headers(
        settings,
        to_name=to_name,
        to_address=to_address,
        subject=subject,
        message_id=message_id,
        date=date,
        extra_headers=extra_headers,
    ):
        message[name] = value
    message["MIME-Version"] = "1.0"
    message["Content-Type"] = "multipart/alternative"
    message.attach(text_part(text, "plain"))
    if html is not None:
        message.attach(text_part(html, "html"))
    return message


def mail_domain(settings: Settings) -> str:
    """`settings.mail_domain`, from the sender parsed once."""
    return sender(settings.mail_from)[1].rsplit("@", 1)[1]


def message_id(settings: Settings, local_part: str) -> str:
    return f"<{local_part}@{mail_domain(settings)}>"


def to_bytes(settings: Settings, message: Message[Any, Any]) -> bytes:
    """The message as sent, DKIM-signed when a key is configured."""
    return signed(settings, message.as_bytes(policy=POLICY))


def signed(settings: Settings, data: bytes) -> bytes:
    """The bytes of a message with a DKIM signature prepended when a key is configured."""
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
    return envelope_of(settings, to_bytes(settings, message), recipient, message_id)


def envelope_of(settings: Settings, data: bytes, recipient: str, message_id: str) -> Envelope:
    """The envelope of a message's finished bytes (`to_bytes`, or `mailer.prepared`)."""
    wire = wire_address(recipient)
    return Envelope(
        envelope_sender(settings), wire.address, data, message_id, smtputf8=wire.smtputf8
    )


def envelope_sender(settings: Settings) -> str:
    return sender(settings.mail_from)[1]

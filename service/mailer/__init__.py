"""Mailer: composes MIME messages and hands their bytes to a transport.

Owns the wire format of every mail (`wire`: headers, folding, DKIM, international
addresses), mail prepared once for many addresses (`prepared`: the same bytes, encoded
once), and the two transports (`transports`: `smtp`, aiosmtplib with a pool of reused
connections and an optional rate limit; `file`, an outbox folder of .eml files). Sending
errors (`errors`) are classified as temporary (retry), permanent, or uncertain (the relay
got the whole message but did not answer in time: it may have been delivered). Imports
`config`, `errors`, `metrics` and `text`.
"""

from service.mailer.errors import (
    PermanentSendError,
    SendError,
    TemporarySendError,
    UncertainSendError,
)
from service.mailer.prepared import PreparedBody, message_bytes
from service.mailer.transports import FileTransport, SmtpTransport, Transport, create_transport
from service.mailer.wire import (
    ADDRESS_HEADERS,
    POLICY,
    URL_LIST_HEADERS,
    Envelope,
    MailPolicy,
    WireAddress,
    compose,
    envelope,
    envelope_of,
    envelope_sender,
    header_safe,
    headers,
    mail_domain,
    message_id,
    signed,
    text_part,
    to_bytes,
    wire_address,
)

__all__ = [
    "ADDRESS_HEADERS",
    "POLICY",
    "URL_LIST_HEADERS",
    "Envelope",
    "FileTransport",
    "MailPolicy",
    "PermanentSendError",
    "PreparedBody",
    "SendError",
    "SmtpTransport",
    "TemporarySendError",
    "Transport",
    "UncertainSendError",
    "WireAddress",
    "compose",
    "create_transport",
    "envelope",
    "envelope_of",
    "envelope_sender",
    "header_safe",
    "headers",
    "mail_domain",
    "message_bytes",
    "message_id",
    "signed",
    "text_part",
    "to_bytes",
    "wire_address",
]

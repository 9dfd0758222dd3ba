"""The errors of sending: temporary (retry), permanent, or uncertain (the relay got the
whole message but did not answer in time: it may have been delivered).

Imports `errors`.
"""

from __future__ import annotations

from service.errors import PartnerpostError


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

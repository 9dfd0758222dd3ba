"""Prepared mail: a multipart/alternative message that many addresses get with only a few
values differing (a name, links) is encoded once; per message only the lines that hold a
stand-in are encoded, and the headers are folded as `compose` folds them.

The bytes equal those `wire.compose` and `wire.to_bytes` make of the same values (a test
compares them), so no recipient can tell which way a message was made. The email package
builds a message object per message and encodes the whole body each time; for a digest
sent to thousands of addresses that was most of a run's time.

Imports `config` and `mailer.wire`.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Callable, Mapping
from email import quoprimime
from email.utils import format_datetime
from functools import cache, partial
from typing import Any

from service.config import Settings
from service.mailer.wire import POLICY, mailbox, sender, signed, text_header, text_part

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# email.generator's boundaries: 15 '=', a random number of sys.maxsize's width, '=='.
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))
# Folded header lines a body keeps (a few names, each with one value).
_FOLDED_LIMIT = 32
# Encoded lines with values filled in that a part keeps.
_ENCODED_LIMIT = 256


def _qp(text: str) -> bytes:
    """Text as `email.charset`'s quoted-printable body encoding writes it in UTF-8, with
    CRLF line ends (its encoder works line by line, so lines encode alike alone or in a
    body)."""
    encoded: str = quoprimime.body_encode(text.encode("utf-8").decode("latin-1"), eol="\r\n")
    return encoded.encode("ascii")


def _replace(line: str, values: Mapping[str, str]) -> str:
    for stand_in, value in values.items():
        line = line.replace(stand_in, value)
    return line


class PreparedPart:
    """One text part: runs of lines without a stand-in encoded once, the lines with one
    kept as text to fill in and encode per message."""

    def __init__(self, text: str, stand_ins: tuple[str, ...]) -> None:
        self.text = text
        # A CR next to a stand-in could join a line break of its value into one CRLF;
        # such a text (none of ours) is encoded whole per message instead.
        self._by_line = "\r" not in text
        self._pieces: list[bytes | str] = []
        run: list[bytes] = []
        for line in _LINE_BREAK.split(text):
            if any(stand_in in line for stand_in in stand_ins):
                if run:
                    self._pieces.append(b"\r\n".join(run))
                    run = []
                self._pieces.append(line)
            else:
                run.append(_qp(line))
        if run or not self._pieces:
            self._pieces.append(b"\r\n".join(run))
        # Filled-in lines encoded already: the lines whose values many messages share (a
        # municipality's name, its feed) are encoded once, not in every message.
        self._encoded: dict[str, bytes] = {}

    def _encode(self, line: str) -> bytes:
        encoded = self._encoded.get(line)
        if encoded is None:
            if len(self._encoded) >= _ENCODED_LIMIT:  # lines with per-address values
                self._encoded.clear()
            encoded = self._encoded[line] = _qp(line)
        return encoded

    def fill(self, values: Mapping[str, str]) -> bytes:
        """The encoded part with the stand-ins replaced by `values`."""
        if not self._by_line or any("\r" in value for value in values.values()):
            return _qp(_replace(self.text, values))
        return b"\r\n".join(
            piece if isinstance(piece, bytes) else self._encode(_replace(piece, values))
            for piece in self._pieces
        )


class PreparedBody:
    """The text and HTML parts of a multipart/alternative message with stand-ins, encoded
    once, and the headers that are the same in every message of it, folded once."""

    def __init__(self, text: str, html: str | None, stand_ins: tuple[str, ...]) -> None:
        self.text = PreparedPart(text, stand_ins)
        self.html = None if html is None else PreparedPart(html, stand_ins)
        self._folded: dict[tuple[str, str], bytes] = {}

    def shared(self, name: str, source: str, value: Callable[[], Any]) -> bytes:
        """The header line of the value made from `source`, folded once per body."""
        line = self._folded.get((name, source))
        if line is None:
            line = POLICY.fold_binary(name, value())
            if len(self._folded) < _FOLDED_LIMIT:
                self._folded[(name, source)] = line
        return line

    def content_type(self, boundary: str) -> bytes:
        """The Content-Type line naming `boundary`: folded once for a boundary of its
        length (none of its characters is one where a header folds), then filled in."""
        stand_in = "_" * len(boundary)
        line = self.shared(
            "Content-Type",
            stand_in,
            lambda: f'multipart/alternative; boundary="{stand_in}"',
        )
        return line.replace(f'"{stand_in}"'.encode("ascii"), f'"{boundary}"'.encode("ascii"))


@cache
def _part_head(subtype: str) -> bytes:
    """The MIME headers of a text part and the blank line after them."""
    return text_part("", subtype).as_bytes(policy=POLICY)


def _boundary(parts: list[bytes]) -> str:
    """A boundary as email.generator makes one, which no part contains."""
    while True:
        boundary = "=" * 15 + f"{random.randrange(sys.maxsize):0{_BOUNDARY_DIGITS}d}" + "=="
        marker = b"--" + boundary.encode("ascii")
        if not any(marker in part for part in parts):
            return boundary


def _header_lines(
    settings: Settings,
    body: PreparedBody,
    *,
    to_name: str,
    to_address: str,
    subject: str,
    message_id: str,
    date: Any,
    extra_headers: dict[str, str],
    varying: frozenset[str],
) -> list[bytes]:
    """The header lines `wire.headers` gives, in its order; those that are the same in
    every message of the body folded once."""
    mail_from = settings.mail_from
    lines = [
        body.shared("From", mail_from, lambda: mailbox("From", *sender(mail_from))),
        POLICY.fold_binary("To", mailbox("To", to_name, to_address)),
        body.shared("Subject", subject, lambda: text_header("Subject", subject)),
        POLICY.fold_binary("Date", format_datetime(date)),
        POLICY.fold_binary("Message-ID", message_id),
    ]
    for name, value in extra_headers.items():
        if name in varying:
            lines.append(POLICY.fold_binary(name, text_header(name, value)))
        else:
            lines.append(body.shared(name, value, partial(text_header, name, value)))
    lines.append(body.shared("MIME-Version", "1.0", lambda: "1.0"))
    return lines


def message_bytes(
    settings: Settings,
    body: PreparedBody,
    *,
    text_values: Mapping[str, str],
    html_values: Mapping[str, str],
    to_name: str,
    to_address: str,
    subject: str,
    message_id: str,
    date: Any,
    extra_headers: dict[str, str] | None = None,
    varying: frozenset[str] = frozenset(),
) -> bytes:
    """The bytes `compose` and `to_bytes` make of the body with its stand-ins filled in
    (the text part's from `text_values`, the HTML part's from `html_values`); the extra
    headers named in `varying` differ from message to message, the rest are folded once."""
    lines = _header_lines(
        settings,
        body,
        to_name=to_name,
        to_address=to_address,
        subject=subject,
        message_id=message_id,
        date=date,
        extra_headers=extra_headers or {},
        varying=varying,
    )
    parts = [_part_head("plain") + body.text.fill(text_values)]
    if body.html is not None:
        parts.append(_part_head("html") + body.html.fill(html_values))
    boundary = _boundary(parts)
    lines.append(body.content_type(boundary))
    separator = f"\r\n--{boundary}\r\n".encode("ascii")
    data = b"".join(lines) + b"\r\n" + separator[2:] + separator.join(parts)
    return signed(settings, data + f"\r\n--{boundary}--\r\n".encode("ascii"))

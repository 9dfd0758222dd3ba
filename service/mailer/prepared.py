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
from collections.abc import Mapping
from email import quoprimime
from functools import cache
from typing import Any

from service.config import Settings
from service.mailer.wire import POLICY, headers, signed, text_part

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# email.generator's boundaries: 15 '=', a random number of sys.maxsize's width, '=='.
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))
# Headers folded anew for every message; the rest are folded once per prepared body.
_PER_MESSAGE = frozenset({"To", "Date", "Message-ID"})
_FOLDED_LIMIT = 32


def _qp_line(line: str) -> bytes:
    """One line as `email.charset`'s quoted-printable body encoding writes UTF-8 text
    (its encoder works line by line, so lines encode alike alone or in a body)."""
    encoded: str = quoprimime.body_encode(line.encode("utf-8").decode("latin-1"), eol="\r\n")
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
        self._pieces: list[bytes | str] = []
        run: list[bytes] = []
        for line in _LINE_BREAK.split(text):
            if any(stand_in in line for stand_in in stand_ins):
                if run:
                    self._pieces.append(b"\r\n".join(run))
                    run = []
                self._pieces.append(line)
            else:
                run.append(_qp_line(line))
        if run or not self._pieces:
            self._pieces.append(b"\r\n".join(run))

    def fill(self, values: Mapping[str, str]) -> bytes:
        """The encoded part with the stand-ins replaced by `values`."""
        return b"\r\n".join(
            piece if isinstance(piece, bytes) else _qp_line(_replace(piece, values))
            for piece in self._pieces
        )


class PreparedBody:
    """The text and HTML parts of a multipart/alternative message with stand-ins, encoded
    once, and the headers that are the same in every message of it, folded once."""

    def __init__(self, text: str, html: str | None, stand_ins: tuple[str, ...]) -> None:
        self.text = PreparedPart(text, stand_ins)
        self.html = None if html is None else PreparedPart(html, stand_ins)
        self._folded: dict[tuple[str, str], bytes] = {}

    def folded(self, name: str, source: str, value: Any) -> bytes:
        """The header line of `value` (made from `source`), folded once per body."""
        if name in _PER_MESSAGE:
            return POLICY.fold_binary(name, value)
        line = self._folded.get((name, source))
        if line is None:
            line = POLICY.fold_binary(name, value)
            if len(self._folded) < _FOLDED_LIMIT:  # a header that differs per message
                self._folded[(name, source)] = line
        return line


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
) -> bytes:
    """The bytes `compose` and `to_bytes` make of the body with its stand-ins filled in
    (the text part's from `text_values`, the HTML part's from `html_values`)."""
    sources = {"From": settings.mail_from, "Subject": subject, **(extra_headers or {})}
    lines = [
        body.folded(name, sources.get(name, ""), value)
        for name, value in headers(
            settings,
            to_name=to_name,
            to_address=to_address,
            subject=subject,
            message_id=message_id,
            date=date,
            extra_headers=extra_headers,
        )
    ]
    parts = [_part_head("plain") + body.text.fill(text_values)]
    if body.html is not None:
        parts.append(_part_head("html") + body.html.fill(html_values))
    boundary = _boundary(parts)
    content_type = f'multipart/alternative; boundary="{boundary}"'
    lines.append(body.folded("MIME-Version", "1.0", "1.0"))
    lines.append(POLICY.fold_binary("Content-Type", content_type))
    separator = f"\r\n--{boundary}\r\n".encode("ascii")
    data = b"".join(lines) + b"\r\n" + separator[2:] + separator.join(parts)
    return signed(settings, data + f"\r\n--{boundary}--\r\n".encode("ascii"))

"""Prepared mail: the bytes of a body encoded once and filled in per message equal those the
email package composes from the filled-in text, for any text, names and values."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.policy import Compat32

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from service import mailer
from service.config import Settings

from .helpers import MAIL_FROM, SECRET_KEY

STAND_INS = ("@@A@@", "@@B@@")
DATE = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
_BOUNDARY = re.compile(rb'boundary="([^"]+)"')

# Pieces of lines (any characters but line breaks, some that quoted-printable treats
# specially, the stand-ins), each followed by a line break of any kind or none.
_LINE_CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")
_PIECES = st.one_of(
    st.text(_LINE_CHARACTERS, max_size=200),
    st.sampled_from(["", " ", "a\t", "=", "x" * 75 + "=", "y" * 74 + " ", "-- ", "ä" * 40]),
    st.sampled_from(STAND_INS),
)
texts = st.lists(st.tuples(_PIECES, st.sampled_from(["", "\n", "\r\n", "\r"])), max_size=14).map(
    lambda pieces: "".join(piece + line_break for piece, line_break in pieces)
)
values = st.text(_LINE_CHARACTERS, max_size=90)


def _settings() -> Settings:
    return Settings(
        _env_file=None, mail_from=MAIL_FROM, secret_key=SecretStr(SECRET_KEY), mailer="file"
    )


def _normalized(data: bytes) -> bytes:
    (boundary,) = _BOUNDARY.findall(data)
    return data.replace(boundary, b"BOUNDARY")


def _both(
    text: str, html: str | None, a: str, b: str, name: str, subject: str
) -> tuple[bytes, bytes]:
    """(composed by the email package, prepared and filled in) for the same message."""
    config = _settings()
    text_values = {"@@A@@": a, "@@B@@": b}
    html_values = {"@@A@@": a.upper(), "@@B@@": b}
    common = {
        "to_name": name,
        "to_address": "rathaus@münchen.de",
        "subject": subject,
        "message_id": "<digest.1.202611300700@partnerpost.example.org>",
        "date": DATE,
        "extra_headers": {
            "List-Id": f"Liste <digest.{config.mail_domain}>",
            "List-Unsubscribe": f"<https://x.example/abmelden/{len(a)}>, <mailto:a@x.example>",
        },
    }
    filled_html = None if html is None else _fill(html, html_values)
    composed = mailer.compose(config, text=_fill(text, text_values), html=filled_html, **common)
    body = mailer.PreparedBody(text, html, STAND_INS)
    prepared = mailer.message_bytes(
        config,
        body,
        text_values=text_values,
        html_values=html_values,
        varying=frozenset({"List-Unsubscribe"}),
        **common,
    )
    return mailer.to_bytes(config, composed), prepared


def _fill(text: str, values: dict[str, str]) -> str:
    for stand_in, value in values.items():
        text = text.replace(stand_in, value)
    return text


@settings(max_examples=150, deadline=None)
@given(texts, st.one_of(st.none(), texts), values, values, values, values)
def test_prepared_bytes_equal_composed_bytes(text, html, a, b, name, subject):
    composed, prepared = _both(text, html, a, b, name, subject)

    assert _normalized(prepared) == _normalized(composed), repr((text, html, a, b, name, subject))


def test_a_body_prepared_once_fills_in_each_message_alone():
    config = _settings()
    body = mailer.PreparedBody("Hallo @@A@@,\nunveränderter Text\n", "<p>@@A@@</p>", STAND_INS)
    messages = [
        mailer.message_bytes(
            config,
            body,
            text_values={"@@A@@": name},
            html_values={"@@A@@": name},
            to_name=name,
            to_address=f"{n}@stadt.example",
            subject="Wochenüberblick",
            message_id=f"<{n}@partnerpost.example.org>",
            date=DATE,
        )
        for n, name in enumerate(["Stadt Borna", "Große Kreisstadt"])
    ]

    assert b"Hallo Stadt Borna," in messages[0] and b"Stadt Borna</p>" in messages[0]
    assert b"Hallo Gro=C3=9Fe Kreisstadt," in messages[1] and b"Borna" not in messages[1]
    assert _BOUNDARY.findall(messages[0]) != _BOUNDARY.findall(messages[1])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["Date", "Message-ID", "Subject", "To", "X-Kurz"]),
    # Values as `header_safe` leaves them (no control characters but tabs), and words
    # around the length where compat32 starts to fold.
    st.one_of(
        st.text(
            st.characters(
                max_codepoint=127, blacklist_categories=("Cc",), whitelist_characters="\t"
            ),
            max_size=90,
        ),
        st.lists(
            st.sampled_from(["Wochen", "<a@b.example>", ";", "x" * 30, "", "\t"]), max_size=9
        ).map(" ".join),
    ),
)
def test_headers_written_as_they_are_equal_what_compat32_folds(name, value):
    assert mailer.POLICY.fold_binary(name, value) == Compat32(linesep="\r\n").fold_binary(
        name, value
    )


def test_a_body_filled_in_for_more_messages_than_it_keeps_lines_gives_each_its_values():
    """Encoded lines are kept per filled-in text and dropped when too many: every message
    still gets its own values, also after the kept lines were dropped."""
    body = mailer.PreparedBody("Für @@A@@\nAbmelden: @@B@@\nText\n", None, STAND_INS)
    seen = set()
    for n in range(600):
        values = {"@@A@@": f"Stadt {n % 3}", "@@B@@": f"https://x.example/{n}"}
        filled = body.text.fill(values)
        # The same text without stand-ins, encoded whole by a body of its own.
        alone = mailer.PreparedBody(_fill(body.text.text, values), None, ()).text.fill({})
        assert filled == alone
        seen.add(filled)
    assert len(seen) == 600

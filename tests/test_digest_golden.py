"""Golden files: the demo listing and three subscribed addresses in, the exact bytes of the
digests a run writes out.

The bytes are what a recipient gets (headers, quoted-printable bodies, folding), so a change
to how a digest is rendered or composed that is meant to be invisible must leave them equal.
Regenerate after an intended change with `make golden`, then review the diff.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.utils import parseaddr

import pytest
from pydantic import SecretStr

from service import mailer, store

from .helpers import BERLIN, DATA, MAIL_FROM, SECRET_KEY, import_demo, run_digests, sqlite_only

GOLDEN = DATA / "digest"
IMPORTED_AT = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
CONFIRMED_AT = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
RUN_AT = datetime(2026, 11, 30, 8, 0, tzinfo=BERLIN)
UPDATE = os.environ.get("PARTNERPOST_UPDATE_GOLDEN") == "1"
# What differs from one sending to the next: the moment, and the MIME boundary (random, as
# it must not occur in the parts).
_DATE = re.compile(rb"^Date: [^\r\n]*\r\n", re.MULTILINE)
_BOUNDARY = re.compile(rb'boundary="([^"]+)"')


def _normalized(data: bytes) -> bytes:
    """The message with the moment of sending and the boundary replaced by fixed text."""
    data = _DATE.sub(b"Date: (the moment of sending)\r\n", data)
    (boundary,) = _BOUNDARY.findall(data)
    assert re.fullmatch(rb"=+\d+==", boundary), boundary
    return data.replace(boundary, b"(boundary)")


# (golden file, address, municipality, partner): own articles with a partnership; a name to
# escape in HTML and to encode in headers, with an internationalized domain; none of its own.
CASES = [
    ("leipzig.eml", "rathaus@leipzig.de", "Stadt Leipzig", "Kyjiw"),
    ("muenchen.eml", "presse@münchen.de", 'Gemeinde "Groß & <Klein>" Süd', None),
    ("vielfach.eml", "stelle@gemeinde.example", "Gemeinde Vielfach", None),
]


async def _digests(settings, sessions) -> dict[str, bytes]:
    """What a run at RUN_AT writes for each case, by golden file name."""
    await import_demo(sessions, now=IMPORTED_AT)
    async with sessions() as session, session.begin():
        for _, email, name, partner in CASES:
            subscriber = await store.create_subscriber(
                session, name=name, partner=partner, frequency=store.Frequency.WEEKLY
            )
            await store.add_address(
                session, subscriber, email, store.AddressStatus.ACTIVE, now=CONFIRMED_AT
            )
    report = await run_digests(settings, sessions, RUN_AT)
    assert report.sent == len(CASES)
    by_recipient = {mailer.wire_address(email).address: name for name, email, *_ in CASES}
    written = {}
    for path in settings.outbox_dir.glob("*.eml"):
        data = _normalized(path.read_bytes())
        recipient = parseaddr(str(message_from_bytes(data)["To"]))[1]
        written[by_recipient[recipient]] = data
    return written


@sqlite_only
async def test_digests_match_the_golden_files_byte_for_byte(settings, sessions):
    settings = settings.model_copy(
        update={
            "mailer": "file",
            "mail_from": MAIL_FROM,
            "secret_key": SecretStr(SECRET_KEY),
        }
    )
    written = await _digests(settings, sessions)

    assert sorted(written) == sorted(name for name, *_ in CASES)
    for name, data in written.items():
        expected_path = GOLDEN / name
        if UPDATE:
            expected_path.parent.mkdir(parents=True, exist_ok=True)
            expected_path.write_bytes(data)
        assert data == expected_path.read_bytes(), name


@pytest.mark.parametrize("name", [name for name, *_ in CASES])
def test_golden_digests_are_well_formed_mail(name):
    data = (GOLDEN / name).read_bytes()
    message = message_from_bytes(data, policy=policy.SMTP)
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert all(len(line) <= 998 for line in data.split(b"\r\n")), "a line over 998 octets"
    assert data.isascii()

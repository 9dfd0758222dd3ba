"""`digest run` counts rows, not attempts, and says when it could not deliver."""

from __future__ import annotations

import socket

import pytest

from service import ingest, store

from .test_cli_digest import cli
from .test_digest import next_monday_8am
from .test_ingest import DEMO_TEXT

sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


async def _subscribed(sessions, count: int, **extra) -> list[str]:
    emails = [f"stelle{i}@gemeinde.example" for i in range(count)]
    async with sessions() as session, session.begin():
        subscriber = await store.create_subscriber(
            session, name="Gemeinde Vielfach", frequency=store.Frequency.WEEKLY, **extra
        )
        for email in emails:
            await store.add_address(session, subscriber, email, store.AddressStatus.ACTIVE)
    return emails


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


@sqlite_only
async def test_an_unreachable_relay_exits_2_and_says_nothing_could_be_delivered(
    mail_settings, smtp_server, sessions
):
    await ingest.save(sessions, ingest.parse_listing_text(DEMO_TEXT))
    await _subscribed(sessions, 4)

    code, out, err = await cli(
        mail_settings,
        "digest",
        "run",
        "--at",
        next_monday_8am().isoformat(),
        PARTNERPOST_SMTP_PORT=str(_closed_port()),
        PARTNERPOST_DIGEST_RETRY_BASE_SECONDS="600",
    )

    assert code == 2, out + err
    last = _last_line(out)
    assert last.startswith("sent 0, skipped 0, failed 0, retrying 4, uncertain 0 "), last
    assert "nothing could be delivered" in last
    assert "Traceback" not in err


@sqlite_only
async def test_rows_out_of_attempts_count_once_each_as_failed(mail_settings, smtp_server, sessions):
    await ingest.save(sessions, ingest.parse_listing_text(DEMO_TEXT))
    await _subscribed(sessions, 3)

    code, out, _ = await cli(
        mail_settings,
        "digest",
        "run",
        "--at",
        next_monday_8am().isoformat(),
        PARTNERPOST_SMTP_PORT=str(_closed_port()),
        PARTNERPOST_DIGEST_MAX_ATTEMPTS="3",
    )

    assert code == 1, out
    last = _last_line(out)
    assert last.startswith("sent 0, skipped 0, failed 3, retrying 0, uncertain 0 "), last
    assert "3 digest(s) failed permanently" in last


@sqlite_only
@pytest.mark.smtp_replies("451", "451")
async def test_a_row_retried_within_the_run_counts_once_as_sent(
    mail_settings, smtp_server, sessions
):
    await ingest.save(sessions, ingest.parse_listing_text(DEMO_TEXT))
    emails = await _subscribed(sessions, 2)

    code, out, err = await cli(
        mail_settings, "digest", "run", "--at", next_monday_8am().isoformat()
    )

    assert code == 0, out + err
    assert _last_line(out).startswith("sent 2, skipped 0, failed 0, retrying 0, uncertain 0 ")
    assert smtp_server.handler.attempts == 4
    assert sorted(r.recipients[0] for r in smtp_server.handler.received) == emails


@sqlite_only
@pytest.mark.smtp_replies("550")
async def test_a_permanently_failed_row_exits_1_and_is_named_in_the_last_line(
    mail_settings, smtp_server, sessions
):
    await ingest.save(sessions, ingest.parse_listing_text(DEMO_TEXT))
    await _subscribed(sessions, 3)
    async with sessions() as session, session.begin():
        nothing_new = await store.create_subscriber(
            session, name="Stadt Ohne", frequency=store.Frequency.WEEKLY, topics=["Kein Thema"]
        )
        await store.add_address(
            session, nothing_new, "ohne@stadt.example", store.AddressStatus.ACTIVE
        )

    code, out, _ = await cli(mail_settings, "digest", "run", "--at", next_monday_8am().isoformat())

    assert code == 1, out
    last = _last_line(out)
    assert last.startswith("sent 2, skipped 1, failed 1, retrying 0, uncertain 0 "), last
    assert "1 digest(s) failed permanently" in last
    assert len(smtp_server.handler.received) == 2

"""Delivery outcomes against a real aiosmtpd: international addresses, a poison row among
many, and a relay that takes the message but answers too late."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import pytest

from service import digest, mailer, outcomes, store, subscribers
from service.config import Settings

from .helpers import app_client, import_demo, next_monday_8am, run_digests


async def _setup(sessions, *addresses: tuple[str, str]) -> None:
    """The demo articles, and each (name, email) subscribed as `subscribers add` does."""
    await import_demo(sessions)
    rows = [
        subscribers.SubscriberIn(name=name, email=email, frequency="weekly")
        for name, email in addresses
    ]
    await subscribers.import_rows(sessions, rows, store.utcnow())


async def _run(settings: Settings, sessions) -> digest.RunReport:
    return await run_digests(settings, sessions, next_monday_8am())


async def _ledger(sessions) -> dict[str, store.Delivery]:
    async with sessions() as session:
        result = await session.execute(
            store.select(store.Delivery, store.Address.email).join(
                store.Address, store.Address.id == store.Delivery.address_id
            )
        )
        return {email: delivery for delivery, email in result.all()}


def _head(received) -> bytes:
    return received.data.split(b"\r\n\r\n", 1)[0]


# --- one address cannot stop the others ----------------------------------------------------


async def test_an_address_the_relay_cannot_take_fails_alone_and_the_others_all_receive(
    mail_settings, smtp_server, engine, sessions
):
    good = [(f"Gemeinde {n}", f"stelle{n}@gemeinde{n}.de") for n in range(12)]
    poison = ("Stadt Ü", "bürgermeister@example.org")  # needs SMTPUTF8; this relay has none
    await _setup(sessions, *good[:6], poison, *good[6:])

    report = await _run(mail_settings, sessions)

    assert sorted(r.recipients[0] for r in smtp_server.handler.received) == sorted(
        email for _, email in good
    )
    assert (report.sent, report.failed) == (12, 1)
    failed = (await _ledger(sessions))["bürgermeister@example.org"]
    assert failed.status == "failed"
    assert "SMTPUTF8" in failed.last_reply


@pytest.mark.smtputf8
async def test_utf8_local_part_is_sent_with_smtputf8_when_the_relay_offers_it(
    mail_settings, smtp_server, engine, sessions
):
    await _setup(sessions, ("Stadt Ü", "bürgermeister@example.org"), ("Stadt A", "a@a.de"))

    report = await _run(mail_settings, sessions)

    assert (report.sent, report.failed) == (2, 0)
    (utf8,) = smtp_server.handler.to("bürgermeister@example.org")
    assert b"To: =?utf-8?" in _head(utf8)  # the display name is still RFC 2047
    assert "<bürgermeister@example.org>".encode() in _head(utf8)
    assert str(utf8.message["To"].addresses[0].display_name) == "Stadt Ü"
    (ascii_only,) = smtp_server.handler.to("a@a.de")
    assert _head(ascii_only).isascii()


async def test_idn_domain_is_sent_idna_encoded(mail_settings, smtp_server, engine, sessions):
    await _setup(sessions, ("Stadt Ü", "rathaus@exämple.org"))

    report = await _run(mail_settings, sessions)

    assert report.sent == 1
    (received,) = smtp_server.handler.received
    assert received.recipients == ["rathaus@xn--exmple-cua.org"]
    head = _head(received)
    assert head.isascii() and b"<rathaus@xn--exmple-cua.org>" in head
    assert received.message["To"].addresses[0].display_name == "Stadt Ü"


@pytest.mark.smtputf8
async def test_subscription_form_takes_international_addresses_without_an_error(
    mail_settings, smtp_server, engine
):
    async with app_client(mail_settings) as client:
        form = await client.post(
            "/abonnieren", data={"name": "Stadt Ü", "email": "bürgermeister@exämple.org"}
        )
        api = await client.post(
            "/api/abonnements", json={"name": "Stadt Ö", "email": "rathaus@öhringen.example"}
        )
        assert form.status_code == 200 and "Bitte prüfen Sie Ihr Postfach" in form.text
        assert api.status_code == 202
        received = await smtp_server.handler.wait_for(2)

    assert sorted(r.recipients[0] for r in received) == [
        "bürgermeister@xn--exmple-cua.org",
        "rathaus@xn--hringen-80a.example",
    ]


# --- a relay that answers after the timeout ---------------------------------------------------


@pytest.mark.smtp_replies("slow", "slow", "slow", "slow", "slow")
async def test_a_relay_that_answers_too_late_gets_at_most_two_copies_and_the_row_is_uncertain(
    mail_settings, smtp_server, engine, sessions, caplog
):
    settings = mail_settings.model_copy(update={"smtp_data_timeout": 0.5})
    await _setup(sessions, ("Stadt Leipzig", "rathaus@leipzig.de"))

    with caplog.at_level(logging.INFO, logger="service.digest"):
        report = await _run(settings, sessions)
        again = await _run(settings, sessions)

    assert len(smtp_server.handler.received) == 2  # the attempt and its one retry
    # One row, counted once by its final outcome; the retry shows in the attempts.
    assert (report.uncertain, report.retrying, report.failed, report.sent) == (1, 0, 0, 0)
    assert report.attempts == 2
    assert (again.uncertain, again.sent) == (0, 0)
    row = (await _ledger(sessions))["rathaus@leipzig.de"]
    assert (row.status, row.attempts, row.uncertain_attempts) == ("uncertain", 2, 2)
    assert "may have been delivered" in row.last_reply
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("digest run")]
    assert "uncertain 1" in summary[0]


@pytest.mark.smtp_replies("slow", "250")
async def test_an_uncertain_delivery_is_retried_once(mail_settings, smtp_server, engine, sessions):
    settings = mail_settings.model_copy(update={"smtp_data_timeout": 0.5})
    await _setup(sessions, ("Stadt Leipzig", "rathaus@leipzig.de"))

    report = await _run(settings, sessions)

    assert (report.retrying, report.sent, report.uncertain, report.attempts) == (0, 1, 0, 2)
    assert len(smtp_server.handler.received) == 2  # the first may have arrived too
    row = (await _ledger(sessions))["rathaus@leipzig.de"]
    assert (row.status, row.uncertain_attempts) == ("sent", 1)


@pytest.mark.smtp_replies("slow")
async def test_a_patient_relay_wait_is_not_uncertain(mail_settings, smtp_server, engine, sessions):
    smtp_server.handler.slow_reply_seconds = 0.3  # slower than a command may take ...
    settings = mail_settings.model_copy(update={"smtp_timeout": 0.1, "smtp_data_timeout": 30})
    await _setup(sessions, ("Stadt Leipzig", "rathaus@leipzig.de"))

    report = await _run(settings, sessions)  # ... but the end of the message may take longer

    assert (report.sent, report.retrying, report.uncertain) == (1, 0, 0)
    assert len(smtp_server.handler.received) == 1


# --- the rules, one by one ------------------------------------------------------------------


def _after(settings, error, attempts=0, uncertain_attempts=0) -> outcomes.Outcome:
    return outcomes.after_error(
        settings,
        error,
        attempts=attempts,
        uncertain_attempts=uncertain_attempts,
        now=datetime(2026, 11, 23, tzinfo=UTC),
    )


def test_after_an_uncertain_attempt_a_row_never_ends_as_failed(plain_settings):
    uncertain = mailer.UncertainSendError("a@b.de", 0, "no reply")
    refused = mailer.PermanentSendError("a@b.de", 550, "no such user")
    busy = mailer.TemporarySendError("a@b.de", 451, "busy")
    all_but_one = plain_settings.digest_max_attempts - 1

    assert _after(plain_settings, uncertain).status == "pending"
    assert _after(plain_settings, uncertain, 1, 1).status == "uncertain"
    assert _after(plain_settings, uncertain, all_but_one).status == "uncertain"
    assert _after(plain_settings, refused, 1, 1).status == "uncertain"
    assert _after(plain_settings, busy, all_but_one, 1).status == "uncertain"
    assert _after(plain_settings, busy, 1, 1).status == "pending"
    assert _after(plain_settings, refused).permanent_failure is True


def test_an_unexpected_error_fails_its_row_without_counting_as_a_bounce(plain_settings):
    outcome = _after(plain_settings, UnicodeEncodeError("ascii", "ü", 0, 1, "no"))

    assert (outcome.status, outcome.label, outcome.permanent_failure) == ("failed", "failed", False)
    assert re.match(r"cannot send: UnicodeEncodeError: ", outcome.reply)

"""Digests end to end: subscribe, confirm, run a period, read what a real SMTP server got."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header

import pytest
from apscheduler.triggers.cron import CronTrigger

from service import digest, ingest, mailer, store
from service.config import Settings

from .helpers import (
    BERLIN,
    LEIPZIG_FIRST,
    add_article,
    app_client,
    import_demo,
    listed_titles,
    next_monday_8am,
    plain_text,
    run_digests,
    subscribe,
)

BORNA_FIRST = "„Wir holen die Menschen mit dem Auto von der Grenze ab“"


async def _demo_for_leipzig(sessions) -> None:
    """The demo articles, and a@leipzig.de subscribed weekly for Stadt Leipzig (Kyjiw)."""
    await import_demo(sessions)
    await subscribe(sessions, "a@leipzig.de", name="Stadt Leipzig", partner="Kyjiw")


def _runner(settings: Settings, sessions) -> digest.DigestRunner:
    return digest.DigestRunner(settings, sessions, mailer.create_transport(settings))


# --- the whole way, over HTTP and SMTP ------------------------------------------------------


async def test_subscribe_confirm_receive_and_one_click_unsubscribe(
    mail_settings, smtp_server, engine, sessions
):
    await import_demo(sessions)
    async with app_client(mail_settings) as client:
        form = await client.get("/abonnieren")
        assert form.status_code == 200 and "Kommune" in form.text
        answer = await client.post(
            "/abonnieren",
            data={
                "name": "Stadt Leipzig",
                "email": "Rathaus@Leipzig.de",
                "partner": "Kyjiw",
                "frequency": "weekly",
            },
        )
        assert answer.status_code == 200 and "Bitte prüfen Sie Ihr Postfach" in answer.text

        (confirmation,) = await smtp_server.handler.wait_for(1)
        text = plain_text(confirmation)
        (link,) = re.findall(r"https://partnerpost\.example\.org(/bestaetigen/\S+)", text)
        assert (await client.get(link)).status_code == 200  # a page with a button
        confirmed = await client.post(link)
        assert confirmed.status_code == 200 and "Abonnement bestätigt" in confirmed.text

        at = next_monday_8am()
        report = await run_digests(mail_settings, sessions, at)
        assert report.sent == 1

        (received,) = [
            r for r in smtp_server.handler.to("rathaus@leipzig.de") if r is not confirmation
        ]
        message = received.message
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        assert message["From"] == "Kommunalpartnerschaften Ukraine <news@partnerpost.example.org>"
        assert message["To"] == "Stadt Leipzig <rathaus@leipzig.de>"
        week = digest.period_label(digest.latest_period(mail_settings, store.Frequency.WEEKLY, at))
        assert message["Subject"] == f"Kommunalpartnerschaften Ukraine – {week}"
        assert message["Date"] and message["List-Id"]
        assert re.fullmatch(r"<digest\.\d+\.\d+@partnerpost\.example\.org>", message["Message-ID"])
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
        assert unsubscribe[0].startswith("https://partnerpost.example.org/abmelden/")
        assert unsubscribe[1].startswith("mailto:news@partnerpost.example.org?subject=")
        assert len(listed_titles(received)) == 10
        assert listed_titles(received)[0] == LEIPZIG_FIRST
        html = message.get_body(("html",)).get_content()
        assert 'style="' in html and "<style" not in html  # CSS inlined
        assert "Abmelden" in html and "Häufigkeit und Themen ändern" in html

        one_click = await client.post(
            unsubscribe[0].removeprefix("https://partnerpost.example.org"),
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 200

    await add_article(sessions, "Neu", "2026-12-01", place="Leipzig", teaser="Neu")
    after = await run_digests(mail_settings, sessions, at + timedelta(days=7))
    assert after.sent == 0
    assert len(smtp_server.handler.to("rathaus@leipzig.de")) == 2


async def test_raw_list_unsubscribe_header_is_folded_only_between_entries(
    mail_settings, smtp_server, engine, sessions
):
    await import_demo(sessions)
    await subscribe(
        sessions,
        "sehr.lange.adresse.fuer.den.test@verbandsgemeinde-am-rhein.example.de",
        name="Verbandsgemeinde mit einem ausgesprochen langen Namen am Rhein",
    )
    await run_digests(mail_settings, sessions, next_monday_8am())

    (received,) = smtp_server.handler.received
    raw = received.data.decode("ascii")
    header = re.search(r"^List-Unsubscribe: (.*?)\r\n(?=\S)", raw, re.MULTILINE | re.DOTALL)
    assert header is not None
    lines = header.group(1).split("\r\n")
    assert [line.strip().rstrip(",") for line in lines] == [
        e.strip() for e in received.message["List-Unsubscribe"].split(",")
    ]
    assert all(
        line.strip().startswith("<") and line.strip().rstrip(",").endswith(">") for line in lines
    )
    assert "=?" not in header.group(0)


async def test_raw_headers_keep_encoded_words_within_75_characters(
    mail_settings, smtp_server, engine, sessions
):
    """RFC 2047 2: an encoded-word is at most 75 characters; the weekly Subject made 77."""
    name = "Große Kreisstadt Weißenfels an der Saale – Städtepartnerschaft Kamʼjanske"
    await import_demo(sessions)
    await subscribe(sessions, "rathaus@weissenfels.example", name=name)
    await run_digests(mail_settings, sessions, next_monday_8am())

    (received,) = smtp_server.handler.received
    head = received.data.split(b"\r\n\r\n", 1)[0]
    words = re.findall(rb"=\?[^?]+\?[bBqQ]\?[^?]*\?=", head)
    assert len(words) >= 3
    assert max(len(word) for word in words) <= 75, words
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if b"=?" in line)
    # decode_header follows RFC 2047 6.2 (no space between adjacent encoded-words); the
    # address parser of email.policy.default inserts one there.
    raw_to = re.search(rb"^To: (.*?)\r\n(?=\S)", head, re.MULTILINE | re.DOTALL).group(1)
    decoded = str(make_header(decode_header(raw_to.decode("ascii"))))
    assert decoded == f"{name} <rathaus@weissenfels.example>"
    assert received.message["Subject"].startswith("Kommunalpartnerschaften Ukraine – Wochen")


# --- what a period carries ------------------------------------------------------------------


async def test_second_run_in_the_same_period_sends_nothing(
    mail_settings, smtp_server, engine, sessions
):
    await _demo_for_leipzig(sessions)
    at = next_monday_8am()

    first = await run_digests(mail_settings, sessions, at)
    second = await run_digests(mail_settings, sessions, at + timedelta(hours=3))

    assert (first.sent, second.sent) == (1, 0)
    assert len(smtp_server.handler.received) == 1


async def test_next_period_carries_only_the_new_article(
    mail_settings, smtp_server, engine, sessions
):
    await _demo_for_leipzig(sessions)
    at = next_monday_8am()
    await run_digests(mail_settings, sessions, at)

    await add_article(
        sessions, "Winterhilfe für Kyjiw", "2026-11-20", place="Leipzig", teaser="Generatoren"
    )
    await add_article(sessions, "Archiv", "2019-01-01", teaser="Alt", notify=False)
    report = await run_digests(mail_settings, sessions, at + timedelta(days=7))

    assert report.sent == 1
    assert listed_titles(smtp_server.handler.received[-1]) == ["Winterhilfe für Kyjiw"]


async def test_no_notify_import_alone_sends_no_digest(mail_settings, smtp_server, engine, sessions):
    await subscribe(sessions, "a@leipzig.de", name="Stadt Leipzig", partner="Kyjiw")
    await import_demo(sessions, notify=False)

    report = await run_digests(mail_settings, sessions, next_monday_8am())

    assert report.sent == 0 and report.skipped == 1
    assert smtp_server.handler.received == []


async def test_first_digest_reaches_back_one_period_before_confirmation(
    mail_settings, smtp_server, engine, sessions
):
    old = datetime.now(UTC) - timedelta(days=30)
    async with sessions() as session, session.begin():
        await store.save_article(
            session,
            store.ArticleData(
                key="old", title="Längst bekannt", teaser="x", place="Bonn", published_at=old
            ),
            now=old,
        )
    await _demo_for_leipzig(sessions)

    await run_digests(mail_settings, sessions, next_monday_8am())

    titles = listed_titles(smtp_server.handler.received[0])
    assert len(titles) == 10 and "Längst bekannt" not in titles


async def test_article_imported_during_a_run_goes_to_the_next_digest_only(
    mail_settings, smtp_server, engine, sessions
):
    await _demo_for_leipzig(sessions)
    at = next_monday_8am()
    runner = _runner(mail_settings, sessions)
    await runner.plan(at)  # the run has planned ...
    await add_article(sessions, "Mittendrin", "2026-11-24")
    await runner.send_due(digest.RunReport())  # ... and sends after the import
    await runner._transport.close()
    await run_digests(mail_settings, sessions, at + timedelta(days=7))

    first, second = smtp_server.handler.received
    assert "Mittendrin" not in listed_titles(first)
    assert listed_titles(second) == ["Mittendrin"]


async def test_leipzig_and_borna_each_get_their_partnership_first(
    mail_settings, smtp_server, engine, sessions
):
    await import_demo(sessions)
    await subscribe(sessions, "rathaus@leipzig.de", name="Stadt Leipzig", partner="Kyjiw")
    await subscribe(sessions, "rathaus@borna.de", name="Stadt Borna", partner="Irpin")

    await run_digests(mail_settings, sessions, next_monday_8am())

    (leipzig,) = smtp_server.handler.to("rathaus@leipzig.de")
    (borna,) = smtp_server.handler.to("rathaus@borna.de")
    assert listed_titles(leipzig)[0] == LEIPZIG_FIRST
    assert listed_titles(borna)[0] == BORNA_FIRST
    assert "Aus Ihrer Partnerschaft: Stadt Borna – Irpin" in plain_text(borna)


async def test_topics_filter_what_a_subscriber_gets(mail_settings, smtp_server, engine, sessions):
    await ingest.save(
        sessions,
        ingest.parse_json(
            '[{"title": "Strom", "teaser": "a", "place": "Bonn", "published": "2026-11-20",'
            '  "topics": ["Energie"]},'
            ' {"title": "Schule", "teaser": "b", "place": "Bonn", "published": "2026-11-21",'
            '  "topics": ["Bildung"]}]'
        ),
    )
    await subscribe(sessions, "a@jena.de", name="Stadt Jena", topics=["Energie"])

    await run_digests(mail_settings, sessions, next_monday_8am())

    assert listed_titles(smtp_server.handler.received[0]) == ["Strom"]


# --- SMTP faults ----------------------------------------------------------------------------


@pytest.mark.smtp_replies("451", "250")
async def test_451_then_250_delivers_exactly_once(mail_settings, smtp_server, engine, sessions):
    await _demo_for_leipzig(sessions)

    report = await run_digests(mail_settings, sessions, next_monday_8am())

    assert (report.retrying, report.sent, report.attempts) == (0, 1, 2)
    assert smtp_server.handler.attempts == 2
    assert len(smtp_server.handler.received) == 1
    async with sessions() as session:
        (delivery,) = await session.scalars(store.select(store.Delivery))
    assert (delivery.status, delivery.attempts) == ("sent", 2)


@pytest.mark.smtp_replies("550")
async def test_550_fails_without_retry(mail_settings, smtp_server, engine, sessions):
    await _demo_for_leipzig(sessions)
    at = next_monday_8am()

    report = await run_digests(mail_settings, sessions, at)
    again = await run_digests(mail_settings, sessions, at)

    assert (report.failed, report.sent, again.sent, again.failed) == (1, 0, 0, 0)
    assert smtp_server.handler.attempts == 1
    async with sessions() as session:
        (delivery,) = await session.scalars(store.select(store.Delivery))
        address = await store.address_by_email(session, "a@leipzig.de")
    assert delivery.status == "failed" and delivery.last_reply.startswith("550")
    assert address.consecutive_failures == 1 and address.status == "active"


@pytest.mark.smtp_replies("drop", "250")
async def test_connection_dropped_during_data_is_retried(
    mail_settings, smtp_server, engine, sessions
):
    await _demo_for_leipzig(sessions)

    report = await run_digests(mail_settings, sessions, next_monday_8am())

    assert (report.retrying, report.sent, report.attempts) == (0, 1, 2)
    assert len(smtp_server.handler.received) == 1


@pytest.mark.smtp_replies("451", "451", "451")
async def test_temporary_failures_stop_after_the_configured_attempts(
    mail_settings, smtp_server, engine, sessions
):
    settings = mail_settings.model_copy(update={"digest_max_attempts": 3})
    await _demo_for_leipzig(sessions)

    report = await run_digests(settings, sessions, next_monday_8am())

    assert (report.retrying, report.failed, report.sent, report.attempts) == (0, 1, 0, 3)
    assert smtp_server.handler.attempts == 3


@pytest.mark.smtp_replies("550", "550")
async def test_consecutive_permanent_failures_mark_the_address_bounced(
    mail_settings, smtp_server, engine, sessions
):
    settings = mail_settings.model_copy(update={"bounce_after_failures": 2})
    await _demo_for_leipzig(sessions)
    at = next_monday_8am()
    await run_digests(settings, sessions, at)
    await add_article(sessions, "Noch eins", "2026-11-24")
    await run_digests(settings, sessions, at + timedelta(days=7))
    await add_article(sessions, "Und noch eins", "2026-11-25", teaser="y")
    third = await run_digests(settings, sessions, at + timedelta(days=14))

    async with sessions() as session:
        address = await store.address_by_email(session, "a@leipzig.de")
    assert address.status == "bounced"
    assert third.sent == third.failed == 0 and smtp_server.handler.attempts == 2


# --- headers --------------------------------------------------------------------------------


async def test_crlf_in_a_municipality_name_cannot_inject_headers(
    mail_settings, smtp_server, engine, sessions
):
    await import_demo(sessions)
    await subscribe(sessions, "a@x.de", name="Stadt X\r\nBcc: victim@example.org\r\nX-Evil: 1")

    await run_digests(mail_settings, sessions, next_monday_8am())

    (received,) = smtp_server.handler.received
    assert received.recipients == ["a@x.de"]
    head = received.data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^(Bcc|X-Evil):", head, re.MULTILINE | re.IGNORECASE)
    assert received.message["To"].addresses[0].addr_spec == "a@x.de"


# --- periods --------------------------------------------------------------------------------


def test_periods_end_at_the_configured_cron_in_berlin(plain_settings):
    at = datetime(2026, 11, 25, 12, 0, tzinfo=BERLIN)  # a Wednesday
    weekly = digest.latest_period(plain_settings, store.Frequency.WEEKLY, at)
    daily = digest.latest_period(plain_settings, store.Frequency.DAILY, at)
    monthly = digest.latest_period(plain_settings, store.Frequency.MONTHLY, at)

    assert weekly.end == datetime(2026, 11, 23, 7, 0, tzinfo=BERLIN)
    assert weekly.start == datetime(2026, 11, 16, 7, 0, tzinfo=BERLIN)
    assert daily.end == datetime(2026, 11, 25, 7, 0, tzinfo=BERLIN)
    assert monthly.end == datetime(2026, 11, 1, 7, 0, tzinfo=BERLIN)
    assert digest.period_label(weekly) == "Wochenüberblick 16.–22. November 2026"
    assert digest.period_label(daily) == "Tagesüberblick 24. November 2026"
    assert digest.period_label(monthly) == "Monatsüberblick Oktober 2026"
    spanning = digest.latest_period(
        plain_settings, store.Frequency.WEEKLY, datetime(2026, 12, 8, 9, 0, tzinfo=BERLIN)
    )
    assert digest.period_label(spanning) == "Wochenüberblick 30. November – 6. Dezember 2026"


def test_periods_follow_summer_time(plain_settings):
    summer = digest.latest_period(
        plain_settings, store.Frequency.DAILY, datetime(2026, 7, 1, 9, 0, tzinfo=BERLIN)
    )
    assert summer.end == datetime(2026, 7, 1, 5, 0, tzinfo=UTC)


def test_a_per_minute_cron_finds_its_latest_period_at_once(settings):
    """Regression: the period search walked 70 days of fire times, minutes of work (and
    deaf to SIGTERM) for a cron that fires every minute."""
    every_minute = settings.model_copy(update={"digest_cron_daily": "* * * * *"})
    at = datetime(2026, 11, 25, 12, 0, 30, tzinfo=BERLIN)

    started = time.perf_counter()
    period = digest.latest_period(every_minute, store.Frequency.DAILY, at)

    assert time.perf_counter() - started < 0.5
    assert period.start == datetime(2026, 11, 25, 11, 59, tzinfo=BERLIN)
    assert period.end == datetime(2026, 11, 25, 12, 0, tzinfo=BERLIN)


def _walk_70_days(cron: str, at: datetime) -> tuple[datetime, datetime]:
    """The last two fire times up to `at`, found by walking forward from 70 days back."""
    trigger = CronTrigger.from_crontab(cron, timezone=BERLIN)
    ends: list[datetime] = []
    moment = at - timedelta(days=70)
    while (fire := trigger.get_next_fire_time(None, moment)) is not None and fire <= at:
        ends.append(fire)
        moment = fire + timedelta(seconds=1)
    return ends[-2], ends[-1]


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 3, 29, 2, 30, tzinfo=UTC),  # the night summer time starts
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),  # the night it ends
        datetime(2026, 11, 23, 6, 0, tzinfo=UTC),  # exactly at a weekly end
        datetime(2027, 1, 1, 6, 59, tzinfo=UTC),  # a minute before a monthly end
    ],
)
def test_the_latest_period_is_the_last_two_fire_times_of_70_days(settings, at):
    six_hourly = settings.model_copy(update={"digest_cron_daily": "0 */6 * * *"})
    for frequency in store.Frequency:
        period = digest.latest_period(six_hourly, frequency, at)
        assert (period.start, period.end) == _walk_70_days(
            digest.cron_of(six_hourly, frequency), at
        )


async def test_a_photo_caption_alone_does_not_make_an_article_local_news(
    mail_settings, smtp_server, engine, sessions
):
    await _demo_for_leipzig(sessions)

    await run_digests(mail_settings, sessions, next_monday_8am())

    text = plain_text(smtp_server.handler.received[0])
    own = text.split("== Weitere neue Beiträge ==")[0]
    assert "Leipzig – Kyjiw: Eine dynamische Partnerschaft" in own
    assert "Starke Partnerschaften für den Wiederaufbau" in own  # its teaser names Leipzig
    # only the photo caption of these names Leipzig
    assert "Zwei Jahre nach Kriegsbeginn" not in own
    assert "Der Wiederaufbau in der Ukraine beginnt jetzt!" not in own


async def test_pooled_run_sends_over_several_connections_each_digest_once(
    mail_settings, smtp_server, engine, sessions
):
    pooled = mail_settings.model_copy(update={"smtp_pool_size": 3, "digest_batch_size": 7})
    await import_demo(sessions)
    emails = [f"stelle{i}@gemeinde.example" for i in range(30)]
    await subscribe(sessions, *emails)
    smtp_server.handler.slow_seconds = 0.01

    report = await run_digests(pooled, sessions, next_monday_8am())

    assert report.sent == 30
    assert sorted(r.recipients[0] for r in smtp_server.handler.received) == sorted(emails)
    assert len(smtp_server.handler.peers) == 3


@pytest.mark.smtp_replies("550", "250")
async def test_a_delivered_digest_resets_the_failure_streak(
    mail_settings, smtp_server, engine, sessions
):
    await _demo_for_leipzig(sessions)
    at = next_monday_8am()
    await run_digests(mail_settings, sessions, at)
    async with sessions() as session:
        assert (await store.address_by_email(session, "a@leipzig.de")).consecutive_failures == 1

    await add_article(sessions, "Neu", "2026-11-24")
    report = await run_digests(mail_settings, sessions, at + timedelta(days=7))

    assert report.sent == 1
    assert listed_titles(smtp_server.handler.received[0])[0] == LEIPZIG_FIRST  # all again
    async with sessions() as session:
        assert (await store.address_by_email(session, "a@leipzig.de")).consecutive_failures == 0

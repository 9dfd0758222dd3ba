"""Consent (DSGVO): confirmation only by POST and once, the consent record, a person's
data on the command line, privacy notice and imprint everywhere, opaque link tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import timedelta

import itsdangerous
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from service import consent, store, subscribers

from .helpers import (
    add_article,
    app_client,
    cli,
    plain_text,
    run_digests,
)

LEIPZIG = {"name": "Stadt Leipzig", "email": "rathaus@leipzig.de", "partner": "Kyjiw"}
EMAIL = LEIPZIG["email"]
SITE = "https://partnerpost.example.org"


@pytest.fixture
def app_settings(mail_settings, engine):
    """The app of `client` sends its mail through the test SMTP server."""
    return mail_settings


def _links(received, path: str) -> list[str]:
    return re.findall(rf"{re.escape(SITE)}(/{path}/\S+)", plain_text(received))


async def _request(client, smtp_server, **changes) -> str:
    """Subscribe through the form; the path of the confirmation link mailed for it."""
    before = len(smtp_server.handler.to(EMAIL))
    received = len(smtp_server.handler.received)
    answer = await client.post("/abonnieren", data={**LEIPZIG, **changes})
    assert answer.status_code == 200
    # The confirmation mail is queued and sent by the app's scheduler a moment later.
    await smtp_server.handler.wait_for(received + 1)
    mails = smtp_server.handler.to(EMAIL)
    assert len(mails) == before + 1
    (link,) = _links(mails[-1], "bestaetigen")
    return link


async def _status(sessions, email: str = EMAIL) -> str | None:
    async with sessions() as session:
        address = await store.address_by_email(session, email)
        return None if address is None else str(address.status)


async def _unsubscribe(client, sessions, settings) -> None:
    """One-click unsubscribe (RFC 8058) as a mail client does it: a POST, no page."""
    async with sessions() as session:
        address = await store.address_by_email(session, EMAIL)
    token = subscribers.Tokens(settings).unsubscribe(address)
    answer = await client.post(
        f"/abmelden/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200 and "Sie sind abgemeldet" in answer.text


# --- finding 7: a link confirms only by POST, once, and never after an unsubscribe ---


async def test_opening_a_confirmation_link_confirms_nothing(client, smtp_server, sessions):
    link = await _request(client, smtp_server)

    for _ in range(3):  # a town hall's link scanner opens every link, maybe more than once
        page = await client.get(link)
        assert page.status_code == 200
    assert page.text.count("<button") == 1
    assert f'<form method="post" action="{SITE}{link}">' in page.text
    assert "Abonnement bestätigen" in page.text
    assert await _status(sessions) == "pending"

    confirmed = await client.post(link)
    assert confirmed.status_code == 200 and "Abonnement bestätigt" in confirmed.text
    assert await _status(sessions) == "active"


async def test_an_old_confirmation_link_never_undoes_an_unsubscribe(
    client, smtp_server, sessions, mail_settings
):
    link = await _request(client, smtp_server)
    confirmed = await client.post(link)
    await _unsubscribe(client, sessions, mail_settings)

    opened = await client.get(link)  # the bug: this set the address active again
    clicked = await client.post(link)

    assert await _status(sessions) == "unsubscribed"
    assert confirmed.status_code == 200
    assert opened.status_code == clicked.status_code == 400
    assert "ungültig oder abgelaufen" in clicked.text


async def test_a_confirmation_link_works_once(client, smtp_server, sessions):
    link = await _request(client, smtp_server)

    first = await client.post(link)
    second = await client.post(link)

    assert (first.status_code, second.status_code) == (200, 400)
    async with sessions() as session:
        address = await store.address_by_email(session, EMAIL)
        (record,) = await store.consents_of(session, address.id)
    assert record.confirmed_at is not None


async def test_two_clicks_at_once_confirm_once(client, smtp_server, sessions):
    link = await _request(client, smtp_server)

    answers = await asyncio.gather(*(client.post(link) for _ in range(4)))

    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400]
    assert await _status(sessions) == "active"


async def test_a_link_issued_before_an_unsubscribe_does_not_confirm(
    client, smtp_server, sessions, mail_settings
):
    link = await _request(client, smtp_server)
    await _unsubscribe(client, sessions, mail_settings)

    assert (await client.post(link)).status_code == 400
    assert await _status(sessions) == "unsubscribed"

    # Asking again after the unsubscribe gives a new link, and that one works.
    fresh = await _request(client, smtp_server)
    assert (await client.post(fresh)).status_code == 200
    assert await _status(sessions) == "active"


async def _bounce(sessions) -> None:
    async with sessions() as session, session.begin():
        address = await store.address_by_email(session, EMAIL)
        await store.note_address_outcome(
            session, address.id, permanent_failure=True, bounce_after=1
        )


async def test_a_link_issued_before_a_bounce_does_not_confirm(client, smtp_server, sessions):
    first = await _request(client, smtp_server)
    second = await _request(client, smtp_server)
    assert (await client.post(second)).status_code == 200
    await _bounce(sessions)
    assert await _status(sessions) == "bounced"

    assert (await client.post(first)).status_code == 400
    assert await _status(sessions) == "bounced"

    # A request made after the bounce may confirm it again.
    fresh = await _request(client, smtp_server)
    assert (await client.post(fresh)).status_code == 200
    assert await _status(sessions) == "active"


# --- finding 8: the consent record, and a person's data on the command line ------------


async def _stored_text(sessions) -> str:
    """Every value of every table that holds data about people, as one text."""
    parts = []
    async with sessions() as session:
        for model in (store.Address, store.Consent, store.ConfirmationRequest, store.Delivery):
            for row in await session.scalars(select(model)):
                parts += [str(v) for v in vars(row).values()]
    return " ".join(parts)


async def test_consent_records_when_which_form_text_and_only_a_hash_of_the_client(
    client, smtp_server, sessions, mail_settings
):
    form = await client.get("/abonnieren")
    assert consent.FORM_NOTICE in form.text  # the form says what is stored and why

    link = await _request(client, smtp_server)
    await client.post(link)

    async with sessions() as session:
        address = await store.address_by_email(session, EMAIL)
        (record,) = await store.consents_of(session, address.id)
    client_hash = consent.client_hash(mail_settings, "127.0.0.1")
    assert (record.source, record.form_version) == ("form", consent.FORM_VERSION)
    assert record.client_hash == record.confirm_client_hash == client_hash
    assert record.requested_at <= record.confirmed_at == address.confirmed_at
    assert "127.0.0.1" not in await _stored_text(sessions)
    # keyed: the hash of the address without the secret key is something else
    assert client_hash != consent.client_hash(
        mail_settings.model_copy(update={"secret_key": SecretStr("x" * 40)}), "127.0.0.1"
    )


async def test_subscriptions_through_the_api_and_by_the_operator_are_recorded_too(
    client, smtp_server, sessions
):
    assert (await client.post("/api/abonnements", json=LEIPZIG)).status_code == 202
    await subscribers.import_rows(
        sessions,
        [subscribers.SubscriberIn(name="Stadt Borna", email="info@borna.de")],
        store.utcnow(),
    )
    async with sessions() as session:
        leipzig = await store.address_by_email(session, EMAIL)
        borna = await store.address_by_email(session, "info@borna.de")
        (api,) = await store.consents_of(session, leipzig.id)
        (operator,) = await store.consents_of(session, borna.id)
    assert (api.source, api.form_version, api.confirmed_at) == ("api", consent.FORM_VERSION, None)
    assert operator.source == "operator" and operator.confirmed_at is not None


async def test_show_export_and_forget_an_address_on_the_command_line(
    client, smtp_server, sessions, mail_settings
):
    await client.post(await _request(client, smtp_server))
    now = store.utcnow()
    period = store.Period(store.Frequency.WEEKLY, now - timedelta(days=7), now + timedelta(hours=1))
    async with sessions() as session, session.begin():
        assert await store.plan_period(session, period, now) == 1

    code, shown, err = await cli(mail_settings, "subscribers", "show", EMAIL)
    assert code == 0, err
    assert f"{EMAIL}: active (Stadt Leipzig, weekly)" in shown
    assert "consent via form: requested 20" in shown
    assert f"form text {consent.FORM_VERSION}" in shown
    assert "confirmed 20" in shown

    code, exported, err = await cli(mail_settings, "subscribers", "export", EMAIL)
    assert code == 0, err
    data = json.loads(exported)
    assert data["email"] == EMAIL and data["municipality"]["partner"] == "Kyjiw"
    assert data["consents"][0]["form_text"] == consent.FORM_NOTICE
    assert [d["period"] for d in data["deliveries"]] == [period.key]
    assert len(data["subscription_requests"]) == 1

    code, _, err = await cli(mail_settings, "subscribers", "forget", EMAIL)
    assert code == 0, err

    assert EMAIL not in await _stored_text(sessions)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(store.Subscriber)) == 0
        counts = await store.anonymous_counts(session)
    # The running app's sender may have taken the row meanwhile (nothing new: "empty").
    state = next(key for key in counts if key.startswith(f"deliveries:{period.key}:"))
    assert state.rsplit(":", 1)[1] in {"pending", "empty"}
    assert counts == {"erasures": 1, state: 1}
    code, _, err = await cli(mail_settings, "subscribers", "export", EMAIL)
    assert code == 1 and "no address" in err


# --- finding 9: privacy notice and imprint from every page and mail -------------------


async def test_every_page_links_the_privacy_notice_and_the_imprint(client, smtp_server):
    link = await _request(client, smtp_server)
    privacy = f'href="{SITE}/datenschutz"'
    imprint = f'href="{SITE}/impressum"'
    for path in ("/", "/abonnieren", "/artikel/gibt-es-nicht", link, "/datenschutz", "/impressum"):
        page = await client.get(path)
        assert privacy in page.text and imprint in page.text, path

    notice = await client.get("/datenschutz")
    assert notice.status_code == 200 and "<h1>Datenschutzerklärung</h1>" in notice.text
    assert "Art. 15 DSGVO" in notice.text and "Prüfwert Ihrer IP-Adresse" in notice.text
    assert "<h1>Impressum</h1>" in (await client.get("/impressum")).text


async def test_configured_privacy_and_imprint_addresses_are_linked_instead(mail_settings, engine):
    settings = mail_settings.model_copy(
        update={
            "privacy_url": "https://www.example.de/datenschutz.html",
            "imprint_url": "https://www.example.de/impressum.html",
        }
    )
    async with app_client(settings) as client:
        form = await client.get("/abonnieren")
        moved = await client.get("/datenschutz")
    assert 'href="https://www.example.de/datenschutz.html"' in form.text
    assert 'href="https://www.example.de/impressum.html"' in form.text
    assert moved.status_code == 307
    assert moved.headers["location"] == "https://www.example.de/datenschutz.html"


def _both_parts(received) -> tuple[str, str]:
    return plain_text(received), received.message.get_body(("html",)).get_content()


async def test_confirmation_and_digest_mails_link_the_privacy_notice_and_the_imprint(
    client, smtp_server, sessions, mail_settings
):
    await client.post(await _request(client, smtp_server))
    await add_article(sessions, "Neu", "2026-12-01", place="Leipzig", teaser="Neu")
    report = await run_digests(mail_settings, sessions, store.utcnow() + timedelta(days=8))
    assert report.sent == 1

    confirmation, digest_mail = smtp_server.handler.to(EMAIL)
    assert digest_mail.message["List-Unsubscribe"].startswith(f"<{SITE}/abmelden/")
    for received in (confirmation, digest_mail):
        text, html = _both_parts(received)
        assert f"Datenschutz: {SITE}/datenschutz" in text
        assert f"Impressum: {SITE}/impressum" in text
        assert f'href="{SITE}/datenschutz"' in html and f'href="{SITE}/impressum"' in html
    # The confirmation mail says how long an unconfirmed address is kept.
    for part in _both_parts(confirmation):
        assert "wir löschen Ihre Adresse" in part and "nach 30 Tagen" in part


# --- finding 10: tokens carry no readable address -------------------------------------


def _payload(token: str) -> bytes:
    segment = token.split(".")[0]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


async def test_links_in_mails_do_not_carry_the_address(
    client, smtp_server, sessions, mail_settings
):
    link = await _request(client, smtp_server)
    await client.post(link)
    async with sessions() as session:
        address = await store.address_by_email(session, EMAIL)
    tokens = subscribers.Tokens(mail_settings)
    for token in (
        link.rsplit("/", 1)[1],
        tokens.unsubscribe(address),
        tokens.preferences(address),
    ):
        payload = _payload(token)
        assert b"leipzig" not in payload.lower() and b"@" not in payload, payload
        assert "leipzig" not in token.lower()


async def test_unsubscribe_links_in_mails_sent_before_still_work(
    client, smtp_server, sessions, mail_settings
):
    await client.post(await _request(client, smtp_server))
    async with sessions() as session:
        address = await store.address_by_email(session, EMAIL)
    legacy = itsdangerous.URLSafeSerializer(
        mail_settings.secret_key.get_secret_value(), salt="unsubscribe"
    ).dumps({"a": address.id, "e": address.email})

    answer = await client.post(f"/abmelden/{legacy}")

    assert answer.status_code == 200
    assert await _status(sessions) == "unsubscribed"

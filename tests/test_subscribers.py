"""Subscriptions: double opt-in, signed links, no enumeration, rate limits, CSV import."""

from __future__ import annotations

import re
import time

import itsdangerous
import pytest
from pydantic import SecretStr, ValidationError

from service import consent, store, subscribers

from .helpers import plain_text, send_confirmations, subscribe

LEIPZIG = {"name": "Stadt Leipzig", "email": "rathaus@leipzig.de", "partner": "Kyjiw"}


@pytest.fixture
def app_settings(mail_settings, engine):
    """The app of `client` sends its mail through the test SMTP server."""
    return mail_settings


def _link(received, path: str) -> str:
    (link,) = re.findall(rf"https://partnerpost\.example\.org(/{path}/\S+)", plain_text(received))
    return link


async def _active_address(sessions, email="rathaus@leipzig.de", name="Stadt Leipzig"):
    (address,) = await subscribe(sessions, email, name=name)
    return address


async def test_confirmation_mail_and_its_page_button_activate_the_address(
    client, smtp_server, sessions
):
    response = await client.post("/api/abonnements", json=LEIPZIG)
    assert response.status_code == 202

    (mail,) = await smtp_server.handler.wait_for(1)
    assert mail.recipients == ["rathaus@leipzig.de"]
    assert mail.message["Subject"].startswith("Bitte bestätigen Sie Ihr Abonnement")
    async with sessions() as session:
        address = await store.address_by_email(session, "rathaus@leipzig.de")
    assert address.status == "pending"

    page = await client.get(_link(mail, "bestaetigen"))
    assert page.status_code == 200 and page.text.count("<button") == 1
    confirmed = await client.post(_link(mail, "bestaetigen"))

    assert confirmed.status_code == 200
    async with sessions() as session:
        address = await store.address_by_email(session, "rathaus@leipzig.de")
        assert address.status == "active" and address.confirmed_at is not None
        assert address.subscriber.partner == "Kyjiw"


async def test_known_and_unknown_addresses_get_the_same_answer(client, smtp_server, sessions):
    await _active_address(sessions)

    known = await client.post("/api/abonnements", json=LEIPZIG)
    unknown = await client.post("/api/abonnements", json={**LEIPZIG, "email": "neu@leipzig.de"})
    known_form = await client.post("/abonnieren", data=LEIPZIG)
    unknown_form = await client.post("/abonnieren", data={**LEIPZIG, "email": "neu2@leipzig.de"})

    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    assert known_form.status_code == unknown_form.status_code == 200
    assert known_form.text == unknown_form.text
    # the active address gets no mail; the new ones get their confirmation
    await smtp_server.handler.wait_for(2)
    assert smtp_server.handler.to("rathaus@leipzig.de") == []
    assert len(smtp_server.handler.received) == 2


async def test_confirmation_mails_per_address_are_limited(
    client, smtp_server, mail_settings, sessions
):
    limit = mail_settings.confirmations_per_address
    for n in range(limit + 2):
        response = await client.post("/api/abonnements", json=LEIPZIG)
        assert response.status_code == 202
        if n < limit:
            await smtp_server.handler.wait_for(n + 1)
    await send_confirmations(mail_settings, sessions)  # whatever is still queued goes out now
    assert len(smtp_server.handler.received) == limit


async def test_requests_per_client_are_limited(client, smtp_server, mail_settings):
    limit = mail_settings.confirmations_per_client
    answers = [
        (await client.post("/api/abonnements", json={**LEIPZIG, "email": f"a{i}@x.de"})).status_code
        for i in range(limit + 1)
    ]
    assert answers == [202] * limit + [429]
    page = await client.post("/abonnieren", data={**LEIPZIG, "email": "b@x.de"})
    assert page.status_code == 429 and "Zu viele Anfragen" in page.text


async def test_invalid_form_is_shown_again_with_german_errors(client, smtp_server):
    response = await client.post(
        "/abonnieren", data={"name": "Stadt Leipzig", "email": "kein-mail", "ags": "123"}
    )
    assert response.status_code == 422
    assert "E-Mail-Adresse: bitte eine gültige Adresse angeben" in response.text
    assert "Amtlicher Gemeindeschlüssel: acht Ziffern" in response.text
    assert 'value="Stadt Leipzig"' in response.text
    assert smtp_server.handler.received == []


async def test_unsubscribe_page_has_one_button_and_post_unsubscribes(
    client, sessions, mail_settings
):
    address = await _active_address(sessions)
    token = subscribers.Tokens(mail_settings).unsubscribe(address)

    page = await client.get(f"/abmelden/{token}")
    assert page.status_code == 200
    assert page.text.count("<button") == 1 and "rathaus@leipzig.de" in page.text
    done = await client.post(f"/abmelden/{token}")
    again = await client.post(f"/abmelden/{token}")

    assert done.status_code == again.status_code == 200
    async with sessions() as session:
        assert (await store.address_by_email(session, address.email)).status == "unsubscribed"


async def test_preferences_change_frequency_and_topics(client, sessions, mail_settings):
    address = await _active_address(sessions)
    token = subscribers.Tokens(mail_settings).preferences(address)

    page = await client.get(f"/einstellungen/{token}")
    saved = await client.post(
        f"/einstellungen/{token}", data={"frequency": "monthly", "topics": ["Energie"]}
    )

    assert page.status_code == 200 and "Einstellungen für Stadt Leipzig" in page.text
    assert saved.status_code == 200 and "gespeichert" in saved.text
    async with sessions() as session:
        subscriber = (await store.address_by_email(session, address.email)).subscriber
    assert (subscriber.frequency, subscriber.topics) == ("monthly", ["Energie"])


async def test_forged_expired_and_foreign_tokens_are_refused(client, sessions, mail_settings):
    leipzig = await _active_address(sessions)
    borna = await _active_address(sessions, "rathaus@borna.de", "Stadt Borna")
    tokens = subscribers.Tokens(mail_settings)
    good = tokens.unsubscribe(leipzig)
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    other_key = subscribers.Tokens(
        mail_settings.model_copy(
            update={"secret_key": SecretStr("another-secret-key-0123456789abcdef")}
        )
    ).unsubscribe(leipzig)
    swapped = itsdangerous.URLSafeSerializer("wrong", salt="unsubscribe").dumps(
        {"a": borna.id, "e": leipzig.email}
    )
    async with sessions() as session, session.begin():
        record = await store.add_consent(
            session,
            store.Consent(
                address_id=leipzig.id,
                source="form",
                nonce="n0nce",
                issued_status="pending",
                requested_at=store.utcnow(),
            ),
        )

    class Past(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 4 * 24 * 3600

    expired = itsdangerous.URLSafeTimedSerializer(
        mail_settings.secret_key.get_secret_value(), salt="confirm", signer=Past
    ).dumps({"c": record.id, "n": record.nonce})
    confirm_as_unsubscribe = tokens.confirm(record)

    for token in (forged, other_key, swapped, confirm_as_unsubscribe):
        response = await client.post(f"/abmelden/{token}")
        assert response.status_code == 400, token
        assert "ungültig oder abgelaufen" in response.text
    assert (await client.get(f"/bestaetigen/{expired}")).status_code == 400
    assert (await client.post(f"/bestaetigen/{expired}")).status_code == 400
    assert (await client.get(f"/einstellungen/{good}")).status_code == 400  # wrong purpose
    async with sessions() as session:
        statuses = {
            a.email: a.status
            for a in [
                await store.address_by_email(session, leipzig.email),
                await store.address_by_email(session, borna.email),
            ]
        }
    assert statuses == {"rathaus@leipzig.de": "active", "rathaus@borna.de": "active"}


def test_links_signed_with_kept_signers_equal_those_itsdangerous_makes(plain_settings):
    """Signing a digest's links with signers kept (their keys derived once) and one payload
    for both gives the tokens `URLSafeSerializer.dumps` gives, so old and new links pass."""
    tokens = subscribers.Tokens(plain_settings)
    secret = plain_settings.secret_key.get_secret_value()
    expected = {}
    for address in (
        store.Address(id=7, email="Rathaus@Leipzig.de"),
        store.Address(id=8, email="a@b.de"),
    ):
        fingerprint = consent.keyed_hash(plain_settings, "address", address.email.lower())[:16]
        payload = {"a": address.id, "f": fingerprint}
        expected[address.id] = tuple(
            itsdangerous.URLSafeSerializer(secret, salt=salt).dumps(payload)
            for salt in ("unsubscribe", "preferences")
        )
        for _ in range(2):  # the second time with the keys derived already
            assert tokens.of_address(address) == expected[address.id]
            assert (tokens.unsubscribe(address), tokens.preferences(address)) == expected[
                address.id
            ]
    assert expected[7] != expected[8] and expected[7][0] != expected[7][1]


async def test_token_for_an_address_whose_email_changed_is_refused(sessions, mail_settings):
    address = await _active_address(sessions)
    token = subscribers.Tokens(mail_settings).unsubscribe(address)
    async with sessions() as session, session.begin():
        stored = await store.address_by_email(session, address.email)
        stored.email = "neu@leipzig.de"
    async with sessions() as session:
        with pytest.raises(subscribers.InvalidTokenError, match="another address"):
            await subscribers.Tokens(mail_settings).address(session, "unsubscribe", token)


def test_subscriber_validation_rules():
    good = subscribers.SubscriberIn(
        name="Stadt Leipzig", email="Rathaus@Leipzig.DE", ags="14713000"
    )
    assert good.land() == "Sachsen" and good.frequency == "weekly"
    for bad, message in [
        ({"ags": "1471300"}, "String should match pattern"),
        ({"ags": "99713000"}, "unknown Land code"),
        ({"ags": "14713000", "bundesland": "Bayern"}, "lies in Sachsen, not in Bayern"),
        ({"bundesland": "Sachsenland"}, "is no Bundesland"),
        ({"name": "Stadt\r\nBcc: x@y.de"}, "without control characters"),
        ({"email": "kein mail"}, "email"),
        ({"frequency": "hourly"}, "daily"),
    ]:
        with pytest.raises(ValidationError, match=message):
            subscribers.SubscriberIn.model_validate(
                {"name": "Stadt Leipzig", "email": "a@leipzig.de", **bad}
            )


CSV = """name,email,ags,bundesland,partner,frequency,topics
Stadt Leipzig,rathaus@leipzig.de,14713000,Sachsen,Kyjiw,weekly,Energie;Wiederaufbau
Stadt Leipzig,partnerschaft@leipzig.de,,,,,
Stadt Borna,info@borna.de,,,Irpin,monthly,
Stadt Kaputt,keine-adresse,,,,,
Stadt Falsch,falsch@x.de,1234,,,,
Stadt Oft,oft@x.de,,,,hourly,
"""


async def test_csv_import_imports_good_rows_and_reports_bad_ones(sessions):
    report = await subscribers.import_csv(sessions, CSV, store.utcnow())

    assert (report.added, report.unchanged) == (3, 0)
    assert [line for line, _ in report.rejected] == [5, 6, 7]
    assert "email" in report.rejected[0][1]
    assert "ags" in report.rejected[1][1]
    assert "frequency" in report.rejected[2][1]
    async with sessions() as session:
        leipzig = await store.subscriber_by_name(session, "Stadt Leipzig")
        assert [a.email for a in leipzig.addresses] == [
            "rathaus@leipzig.de",
            "partnerschaft@leipzig.de",
        ]
        assert leipzig.topics == ["Energie", "Wiederaufbau"]
        assert all(a.status == "active" for a in leipzig.addresses)

    again = await subscribers.import_csv(sessions, CSV, store.utcnow())
    assert (again.added, again.unchanged) == (0, 3)


async def test_csv_import_never_resubscribes_an_address_that_left(sessions):
    address = await _active_address(sessions)
    async with sessions() as session, session.begin():
        store.unsubscribe(await store.address_by_email(session, address.email), store.utcnow())

    report = await subscribers.import_csv(
        sessions, "name,email\nStadt Leipzig,rathaus@leipzig.de\n", store.utcnow()
    )

    assert report.added == 0
    assert report.rejected == [
        (2, "rathaus@leipzig.de unsubscribed itself; only it can subscribe again")
    ]


async def test_csv_without_required_columns_is_refused(sessions):
    report = await subscribers.import_csv(sessions, "kommune,mail\nA,b@c.de\n", store.utcnow())
    assert report.rejected == [(1, "header lacks the column(s) email, name")]

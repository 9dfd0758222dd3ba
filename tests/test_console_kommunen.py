"""The console's Kommunen pages over real HTTP, on SQLite and PostgreSQL: search and
filters, add, edit, pause, removal, CSV import and export, an address's history."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import operators, store
from service.config import Settings

from .console import EMAIL, PASSWORD, sign_in
from .console import csrf_of as _token
from .helpers import running_app

LEIPZIG = {
    "name": "Stadt Leipzig",
    "email": "info@leipzig.example",
    "ags": "14713000",
    "bundesland": "",
    "partner": "Kyjiw",
    "frequency": "weekly",
    "topics": "Kultur; Wirtschaft",
}


@pytest.fixture
async def anonymous(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running app that has not signed in (http base URL, so that the
    client's jar sends the session cookie back)."""
    plain = settings.model_copy(update={"base_url": "http://partnerpost.test"})
    async with (
        running_app(plain) as url,
        httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=30) as http,
    ):
        yield http


@pytest.fixture
async def console(
    anonymous: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> httpx.AsyncClient:
    """The same client, signed in as an operator."""
    async with sessions() as session, session.begin():
        await operators.add(session, EMAIL, PASSWORD, store.utcnow())
    assert (await sign_in(anonymous, EMAIL, PASSWORD)).status_code == 303
    return anonymous


async def _post(http: httpx.AsyncClient, form_page: str, action: str, **data: str):
    token = _token(await http.get(form_page))
    return await http.post(action, data={"csrf": token, **data})


async def _add(http: httpx.AsyncClient, **fields: str) -> httpx.Response:
    return await _post(http, "/verwaltung/kommunen/neu", "/verwaltung/kommunen/neu", **fields)


async def _address_id(sessions, email: str) -> int:
    async with sessions() as session:
        address = await store.address_by_email(session, email)
    assert address is not None
    return address.id


async def test_not_signed_in_is_sent_to_the_sign_in_page(anonymous):
    for path in ("/verwaltung/kommunen", "/verwaltung/kommunen/export.csv"):
        answer = await anonymous.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/verwaltung/anmelden?weiter=")


async def test_added_municipality_is_active_with_an_operator_consent(console, sessions):
    answer = await _add(console, **LEIPZIG)
    listed = await console.get(answer.headers["location"])

    assert answer.status_code == 303 and answer.headers["location"] == "/verwaltung/kommunen"
    assert "info@leipzig.example für Stadt Leipzig eingetragen" in listed.text
    async with sessions() as session:
        address = await store.address_by_email(session, "info@leipzig.example")
        assert address is not None
        consents = await store.consents_of(session, address.id)
    assert address.status == store.AddressStatus.ACTIVE
    assert address.subscriber.bundesland == "Sachsen"
    assert address.subscriber.topics == ["Kultur", "Wirtschaft"]
    assert [c.source for c in consents] == ["operator"]


async def test_bad_ags_is_refused_in_german_with_the_form_kept(console, sessions):
    answer = await _add(console, **{**LEIPZIG, "ags": "1471300"})
    twice = await _add(console, **LEIPZIG)
    again = await _add(console, **LEIPZIG)

    assert answer.status_code == 422
    assert "Amtlicher Gemeindeschlüssel: acht Ziffern" in answer.text
    assert 'value="Stadt Leipzig"' in answer.text and 'value="1471300"' in answer.text
    assert twice.status_code == 303
    assert again.status_code == 422 and "ist schon eingetragen" in again.text


async def test_search_and_filters_find_the_right_rows(console, sessions):
    await _add(console, **LEIPZIG)
    await _add(
        console,
        **LEIPZIG
        | {"name": "Stadt Borna", "email": "post@borna.example", "ags": "", "frequency": "daily"}
        | {"bundesland": "Sachsen", "partner": "Tschernihiw"},
    )
    await _add(
        console,
        **LEIPZIG
        | {"name": "Gemeinde Nord_see", "email": "x@nord.example", "ags": ""}
        | {"bundesland": "Niedersachsen", "partner": ""},
    )

    async def names(**query: str) -> list[str]:
        page = await console.get("/verwaltung/kommunen", params=query)
        assert page.status_code == 200
        return re.findall(r'<th scope="row">([^<]+)</th>', page.text)

    assert await names() == ["Gemeinde Nord_see", "Stadt Borna", "Stadt Leipzig"]
    assert await names(q="LEIP") == ["Stadt Leipzig"]
    assert await names(q="borna.example") == ["Stadt Borna"]
    assert await names(q="_") == ["Gemeinde Nord_see"]  # a wildcard in LIKE, not here
    assert await names(bundesland="Sachsen") == ["Stadt Borna", "Stadt Leipzig"]
    assert await names(partner="tscherni") == ["Stadt Borna"]
    assert await names(rhythmus="daily") == ["Stadt Borna"]
    assert await names(status="paused") == []
    assert await names(status="active", bundesland="Niedersachsen") == ["Gemeinde Nord_see"]


async def test_list_pages_by_fifty(console, sessions):
    async with sessions() as session, session.begin():
        for n in range(51):
            subscriber = await store.create_subscriber(
                session, name=f"Gemeinde {n:02d}", frequency=store.Frequency.WEEKLY
            )
            await store.add_address(
                session, subscriber, f"g{n}@example.org", store.AddressStatus.ACTIVE
            )

    first = await console.get("/verwaltung/kommunen")
    second = await console.get("/verwaltung/kommunen", params={"seite": "2"})

    assert "51 Treffer, Seite 1 von 2" in first.text and "?seite=2" in first.text
    assert first.text.count('<th scope="row">') == 50
    assert re.findall(r'<th scope="row">([^<]+)</th>', second.text) == ["Gemeinde 50"]


async def test_edit_changes_the_municipality_and_the_address(console, sessions):
    await _add(console, **LEIPZIG)
    address_id = await _address_id(sessions, "info@leipzig.example")
    edit = f"/verwaltung/kommunen/adresse/{address_id}/bearbeiten"

    bad = await _post(console, edit, edit, **{**LEIPZIG, "bundesland": "Bayern"})
    answer = await _post(
        console,
        edit,
        edit,
        **{**LEIPZIG, "name": "Leipzig", "email": "Presse@Leipzig.example", "frequency": "monthly"},
    )
    page = await console.get(answer.headers["location"])

    assert bad.status_code == 422 and "Angaben: ungültige Angabe" in bad.text
    assert answer.status_code == 303 and "Gespeichert." in page.text
    async with sessions() as session:
        address = await store.address_by_id(session, address_id)
    assert address is not None and address.email == "presse@leipzig.example"
    assert (address.subscriber.name, address.subscriber.frequency) == ("Leipzig", "monthly")


async def test_pause_and_resume_an_address(console, sessions):
    await _add(console, **LEIPZIG)
    address_id = await _address_id(sessions, "info@leipzig.example")
    page = f"/verwaltung/kommunen/adresse/{address_id}"

    paused = await _post(console, page, f"{page}/status", aktion="pausieren")
    shown = await console.get(page)
    async with sessions() as session:
        status = (await store.address_by_id(session, address_id)).status
    resumed = await _post(console, page, f"{page}/status", aktion="fortsetzen")
    async with sessions() as session:
        status_after = (await store.address_by_id(session, address_id)).status

    assert paused.status_code == 303 and resumed.status_code == 303
    assert status == "paused" and "pausiert" in shown.text and "Fortsetzen" in shown.text
    assert status_after == "active"


async def test_removal_asks_first_and_removes_on_post(console, sessions):
    await _add(console, **LEIPZIG)
    address_id = await _address_id(sessions, "info@leipzig.example")
    confirm = f"/verwaltung/kommunen/adresse/{address_id}/entfernen"

    question = await console.get(confirm)
    async with sessions() as session:
        still_there = await store.address_by_id(session, address_id)
    answer = await _post(console, confirm, confirm)

    assert question.status_code == 200 and "Endgültig entfernen" in question.text
    assert "letzte Adresse von Stadt Leipzig" in question.text and still_there is not None
    assert answer.status_code == 303
    async with sessions() as session:
        assert await store.address_by_id(session, address_id) is None
        assert await store.subscriber_by_name(session, "Stadt Leipzig") is None


async def test_address_page_shows_consent_and_delivery_history(console, sessions):
    await _add(console, **LEIPZIG)
    address_id = await _address_id(sessions, "info@leipzig.example")
    now = store.utcnow()
    async with sessions() as session, session.begin():
        session.add(
            store.Delivery(
                address_id=address_id,
                period_key="weekly:2026-11-23T06:00Z",
                period_start=now - timedelta(days=7),
                period_end=now,
                after_article_id=0,
                upto_article_id=3,
                status=store.DeliveryStatus.FAILED,
                attempts=3,
                next_attempt_at=now,
                last_reply="550 5.1.1 mailbox unavailable",
                created_at=now,
            )
        )

    page = await console.get(f"/verwaltung/kommunen/adresse/{address_id}")

    assert page.status_code == 200
    assert "Verwaltung" in page.text and "Einwilligung" in page.text
    assert "fehlgeschlagen" in page.text and "550 5.1.1 mailbox unavailable" in page.text
    assert '<td class="number">3</td>' in page.text


async def test_csv_import_shows_the_per_line_report(console, sessions):
    text = (
        "name,email,ags,frequency\n"
        "Stadt Leipzig,info@leipzig.example,14713000,weekly\n"
        "Stadt Borna,keine-adresse,,weekly\n"
        "Stadt Leipzig,info@leipzig.example,14713000,weekly\n"
    )
    form = await console.get("/verwaltung/kommunen/import")
    answer = await console.post(
        "/verwaltung/kommunen/import",
        data={"csrf": _token(form)},
        files={"datei": ("kommunen.csv", text.encode("utf-8"), "text/csv")},
    )

    assert answer.status_code == 200
    assert "1 hinzugefügt, 1 unverändert, 1 abgelehnt" in answer.text
    # In German, as the agency's staff read it (the CLI prints the English reason).
    german = "E-Mail-Adresse: bitte eine gültige Adresse angeben, z. B. name@stadt.de"
    assert f'<td class="number">3</td><td>{german}</td>' in answer.text
    async with sessions() as session:
        address = await store.address_by_email(session, "info@leipzig.example")
    assert address is not None and address.status == store.AddressStatus.ACTIVE


async def test_csv_export_round_trips_and_neutralises_formulas(console, sessions):
    await _add(console, **LEIPZIG)
    await _add(
        console,
        **LEIPZIG
        | {"name": "=HYPERLINK(1)", "email": "a@b.example", "ags": "", "partner": "@SUM(1)"},
    )

    export = await console.get("/verwaltung/kommunen/export.csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    async with sessions() as session, session.begin():
        for subscriber in await store.all_subscribers(session):
            await store.remove_subscriber(session, subscriber)
    form = await console.get("/verwaltung/kommunen/import")
    reimported = await console.post(
        "/verwaltung/kommunen/import",
        data={"csrf": _token(form)},
        files={"datei": ("export.csv", export.content, "text/csv")},
    )

    assert export.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.match(
        r'attachment; filename="kommunen-[\d-]+\.csv"', export.headers["content-disposition"]
    )
    assert export.text.splitlines()[0] == "name,email,ags,bundesland,partner,frequency,topics"
    assert rows[0] == {
        "name": "'=HYPERLINK(1)",
        "email": "a@b.example",
        "ags": "",
        "bundesland": "",
        "partner": "'@SUM(1)",
        "frequency": "weekly",
        "topics": "Kultur;Wirtschaft",
    }
    assert rows[1]["name"] == "Stadt Leipzig" and rows[1]["ags"] == "14713000"
    assert "2 hinzugefügt, 0 unverändert, 0 abgelehnt" in reimported.text
    async with sessions() as session:
        leipzig = await store.address_by_email(session, "info@leipzig.example")
    assert leipzig is not None and leipzig.subscriber.topics == ["Kultur", "Wirtschaft"]
    assert leipzig.subscriber.partner == "Kyjiw"


async def test_every_form_needs_its_csrf_token(console, sessions):
    await _add(console, **LEIPZIG)
    address_id = await _address_id(sessions, "info@leipzig.example")
    page = f"/verwaltung/kommunen/adresse/{address_id}"

    answers = [
        await console.post("/verwaltung/kommunen/neu", data={**LEIPZIG, "email": "n@x.example"}),
        await console.post(f"{page}/bearbeiten", data={**LEIPZIG, "name": "Anders"}),
        await console.post(f"{page}/status", data={"aktion": "pausieren"}),
        await console.post(f"{page}/entfernen", data={"csrf": "0" * 64}),
        await console.post("/verwaltung/kommunen/import", files={"datei": ("a.csv", b"x")}),
    ]

    assert [a.status_code for a in answers] == [403] * 5
    async with sessions() as session:
        address = await store.address_by_id(session, address_id)
    assert address is not None and address.status == "active"
    assert address.subscriber.name == "Stadt Leipzig"

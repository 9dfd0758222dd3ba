"""The console's Beiträge and Vorschau over real HTTP, each on SQLite and PostgreSQL: search,
edit and hide articles (feeds, pages and the next digest follow), preview a municipality's
next digest and send it to oneself as a test."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import feedparser
import httpx
import pytest
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import digest, ingest, mailer, operators, store
from service.config import Settings
from service.web.console import articles as console_articles

from .console import EMAIL, PASSWORD, console_client, csrf_of, sign_in
from .helpers import SmtpServer

BERLIN = ZoneInfo("Europe/Berlin")
TOWN_HALL = "rathaus@borna.example"
SCHOOL = "Borna und Irpin planen Schulaustausch"
POWER = "Leipzig schickt Generatoren nach Kyjiw"
CULTURE = "Bonn empfängt Musikerinnen aus Odesa"
ARTICLES = [
    {"title": SCHOOL, "teaser": "Im Frühjahr fahren Klassen aus Borna nach Irpin.",
     "place": "Borna", "published": "2024-11-20", "topics": ["Bildung"]},
    {"title": POWER, "teaser": "Die Stadtwerke helfen beim Winter.",
     "place": "Leipzig", "published": "2024-11-19", "topics": ["Energie"]},
    {"title": CULTURE, "teaser": "Ein Konzertabend in der Oper.",
     "place": "Bonn", "published": "2024-11-18", "topics": ["Kultur"]},
]  # fmt: skip


@pytest.fixture
def console_settings(mail_settings: Settings) -> Settings:
    """Mail through the test SMTP server, an http base URL (the cookie jar then sends the
    session cookie to the loopback server), feeds checked every second."""
    return Settings(
        _env_file=None,
        **mail_settings.model_dump(exclude={"base_url"}),
        base_url="http://partnerpost.test",
    )


@pytest.fixture
async def town(sessions: async_sessionmaker[AsyncSession]) -> store.Subscriber:
    """Three articles, an operator, and Stadt Borna (partner Irpin) with an active address."""
    now = store.utcnow()
    async with sessions() as session, session.begin():
        for item in ARTICLES:
            await store.save_article(session, ingest.ArticleIn.model_validate(item).to_data())
        await operators.add(session, EMAIL, PASSWORD, now)
        borna = await store.create_subscriber(
            session, name="Stadt Borna", partner="Irpin", frequency=store.Frequency.WEEKLY
        )
        # Confirmed now: the period that ended before is not its (the app's catch-up on
        # start sends nothing), the next one carries every article.
        await store.add_address(session, borna, TOWN_HALL, store.AddressStatus.ACTIVE, now)
    return borna


@pytest.fixture
async def client(console_settings, town) -> AsyncIterator[httpx.AsyncClient]:
    """The app serving the articles and Stadt Borna; not signed in yet."""
    async with console_client(console_settings) as http:
        yield http


async def _signed_in(http: httpx.AsyncClient) -> str:
    """Sign in; returns a CSRF token for the console's forms."""
    assert (await sign_in(http, EMAIL, PASSWORD)).status_code == 303
    return csrf_of(await http.get("/verwaltung/beitraege"))


async def _article_id(sessions: async_sessionmaker[AsyncSession], title: str) -> int:
    async with sessions() as session:
        found = await store.search_articles(session, title)
    (article,) = found.articles
    return article.id


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {seconds}s")


async def _feed_titles(http: httpx.AsyncClient, name: str) -> list[str] | None:
    answer = await http.get(f"/feeds/{name}")
    if answer.status_code != 200:
        return None
    return [entry.title for entry in feedparser.parse(answer.content).entries]


def _next_monday_8am() -> datetime:
    """Just after the next weekly period end (Monday 07:00 Berlin)."""
    moment = datetime.now(BERLIN)
    days = (7 - moment.weekday()) % 7 or 7
    return (moment + timedelta(days=days)).replace(hour=8, minute=0, second=0, microsecond=0)


async def _run_digest(settings: Settings, sessions) -> digest.RunReport:
    transport = mailer.create_transport(settings)
    try:
        return await digest.DigestRunner(settings, sessions, transport).run(_next_monday_8am())
    finally:
        await transport.close()


def _text_of(received) -> str:
    return str(received.message.get_body(("plain",)).get_content())


def _titles_in(page: httpx.Response) -> set[str]:
    return {title for title in (SCHOOL, POWER, CULTURE) if title in page.text}


# --- access --------------------------------------------------------------------------------


async def test_pages_send_a_visitor_who_is_not_signed_in_to_the_sign_in_page(client, sessions):
    school = await _article_id(sessions, SCHOOL)
    for path in (
        "/verwaltung/beitraege",
        f"/verwaltung/beitraege/{school}",
        "/verwaltung/vorschau",
    ):
        answer = await client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/verwaltung/anmelden?weiter=")
    hide = await client.post(f"/verwaltung/beitraege/{school}", data={"aktion": "verbergen"})
    assert hide.status_code == 303
    assert (await client.get("/")).text.count(SCHOOL) == 1


async def test_forms_without_the_csrf_token_are_refused(client, sessions, smtp_server, town):
    await _signed_in(client)
    school = await _article_id(sessions, SCHOOL)

    posts = [
        (f"/verwaltung/beitraege/{school}", {"aktion": "verbergen"}),
        (f"/verwaltung/beitraege/{school}", {"title": "Neu", "teaser": "Neu"}),
        ("/verwaltung/vorschau/testversand", {"kommune": str(town.id)}),
    ]
    for path, data in posts:
        answer = await client.post(path, data={**data, "csrf": "0" * 64})
        assert answer.status_code == 403, path
        assert "Formular abgelaufen" in answer.text

    assert SCHOOL in (await client.get("/")).text
    await asyncio.sleep(0.2)
    assert smtp_server.handler.received == []


# --- Beiträge ------------------------------------------------------------------------------


async def test_search_finds_by_title_place_and_topic_and_pages_through(client, monkeypatch):
    await _signed_in(client)

    async def found(**query: str) -> set[str]:
        page = await client.get("/verwaltung/beitraege", params=query)
        assert page.status_code == 200
        return _titles_in(page)

    assert await found() == {SCHOOL, POWER, CULTURE}
    assert await found(q="schulaustausch") == {SCHOOL}
    assert await found(q="LEIPZIG") == {POWER}
    assert await found(q="kultur") == {CULTURE}
    assert await found(thema="Energie") == {POWER}
    assert await found(q="gibt es nicht") == set()

    monkeypatch.setattr(console_articles, "PAGE_SIZE", 2)
    first = await client.get("/verwaltung/beitraege")
    second = await client.get("/verwaltung/beitraege", params={"seite": "2"})
    assert "Seite 1 von 2" in first.text and 'rel="next"' in first.text
    assert _titles_in(first) == {SCHOOL, POWER} and _titles_in(second) == {CULTURE}


async def test_edit_changes_the_title_in_the_feed_and_moves_updated(client, sessions):
    csrf = await _signed_in(client)
    school = await _article_id(sessions, SCHOOL)
    await _eventually(lambda: _has(client, "artikel.atom", SCHOOL))
    before = feedparser.parse((await client.get("/feeds/artikel.atom")).content)
    new_title = "Borna und Irpin tauschen Schulklassen aus"

    saved = await client.post(
        f"/verwaltung/beitraege/{school}",
        data={"csrf": csrf, "title": new_title, "teaser": "Neu.", "topics": "Bildung\nJugend"},
    )

    assert saved.status_code == 303
    assert "Gespeichert." in (await client.get(saved.headers["location"])).text
    await _eventually(lambda: _has(client, "artikel.atom", new_title))
    after = feedparser.parse((await client.get("/feeds/artikel.atom")).content)
    (entry,) = [e for e in after.entries if e.title == new_title]
    (old,) = [e for e in before.entries if e.title == SCHOOL]
    # Compared in full: feedparser's parsed dates drop the fraction, and a quick edit
    # lands in the same second.
    assert entry.id == old.id
    assert datetime.fromisoformat(entry.updated) > datetime.fromisoformat(old.updated)
    assert SCHOOL not in [e.title for e in after.entries]
    await _eventually(lambda: _has(client, "themen/jugend.atom", new_title))


async def test_an_invalid_edit_is_refused_in_german_and_changes_nothing(client, sessions):
    csrf = await _signed_in(client)
    school = await _article_id(sessions, SCHOOL)

    refused = await client.post(
        f"/verwaltung/beitraege/{school}",
        data={"csrf": csrf, "title": "  ", "teaser": "x" * 5001, "topics": ""},
    )

    assert refused.status_code == 422
    assert "Der Titel darf nicht leer sein" in refused.text
    assert "Der Anreißer darf nicht leer sein" in refused.text
    async with sessions() as session:
        article = await store.article_by_id(session, school)
        assert article is not None and article.title == SCHOOL and article.topics == ["Bildung"]


async def _has(http: httpx.AsyncClient, feed: str, title: str) -> bool:
    return title in (await _feed_titles(http, feed) or [])


async def _lacks(http: httpx.AsyncClient, feed: str, title: str) -> bool:
    titles = await _feed_titles(http, feed)
    return titles is not None and title not in titles


async def test_hiding_removes_an_article_from_feeds_pages_and_the_next_digest(
    client, sessions, console_settings, smtp_server
):
    csrf = await _signed_in(client)
    school = await _article_id(sessions, SCHOOL)
    feeds_with_it = (
        "artikel.atom",
        "artikel.xml",
        "themen/bildung.atom",
        "kommunen/stadt-borna.atom",
    )
    for feed in feeds_with_it:
        await _eventually(lambda feed=feed: _has(client, feed, SCHOOL))
    async with sessions() as session:
        link = f"/artikel/{(await store.article_by_id(session, school)).slug}"
    assert (await client.get(link)).status_code == 200

    hidden = await client.post(
        f"/verwaltung/beitraege/{school}",
        data={"csrf": csrf, "aktion": "verbergen", "q": "borna", "seite": "1"},
    )

    assert hidden.status_code == 303
    assert hidden.headers["location"] == "/verwaltung/beitraege?q=borna&seite=1"
    listed = await client.get(hidden.headers["location"])
    assert "ist verborgen" in listed.text and "Wieder zeigen" in listed.text
    for feed in feeds_with_it:
        await _eventually(lambda feed=feed: _lacks(client, feed, SCHOOL))
    assert SCHOOL not in (await client.get("/")).text
    assert SCHOOL not in (await client.get("/themen/bildung")).text
    assert (await client.get(link)).status_code == 410

    report = await _run_digest(console_settings, sessions)
    assert report.sent == 1
    (mail,) = smtp_server.handler.to(TOWN_HALL)
    assert POWER in _text_of(mail) and SCHOOL not in _text_of(mail)

    shown = await client.post(
        f"/verwaltung/beitraege/{school}", data={"csrf": csrf, "aktion": "zeigen"}
    )
    assert shown.status_code == 303
    for feed in feeds_with_it:
        await _eventually(lambda feed=feed: _has(client, feed, SCHOOL))
    assert SCHOOL in (await client.get("/")).text
    assert (await client.get(link)).status_code == 200


# --- Vorschau ------------------------------------------------------------------------------


async def test_preview_shows_the_municipality_s_next_digest(client, town):
    await _signed_in(client)

    page = await client.get("/verwaltung/vorschau", params={"kommune": str(town.id)})

    assert page.status_code == 200
    assert TOWN_HALL in page.text and "Testversand an mich" in page.text
    assert "<iframe" in page.text and 'sandbox=""' in page.text
    frame = re.search(r'srcdoc="([^"]*)"', page.text)
    assert frame and SCHOOL in frame.group(1) and POWER in frame.group(1)
    text = re.search(r'<pre class="digest">(.*?)</pre>', page.text, re.S)
    assert text and f"* {SCHOOL}" in text.group(1)
    _assert_links_lead_back_to_the_preview(html.unescape(frame.group(1)), town.id)
    _assert_links_lead_back_to_the_preview(html.unescape(text.group(1)), town.id)
    listed = await client.get("/verwaltung/vorschau", params={"suche": "born"})
    assert "Stadt Borna" in listed.text
    assert "grenzen Sie die Suche ein" not in listed.text
    unknown = await client.get("/verwaltung/vorschau", params={"kommune": "999999"})
    assert unknown.status_code == 404 and "Kommune nicht gefunden" in unknown.text


async def test_the_preview_lists_at_most_200_municipalities_to_choose(client, sessions, town):
    await _signed_in(client)
    async with sessions() as session, session.begin():
        for n in range(250):
            session.add(
                store.Subscriber(
                    name=f"Gemeinde {n:03}",
                    slug=f"gemeinde-{n:03}",
                    frequency="weekly",
                    created_at=store.utcnow(),
                )
            )

    page = await client.get("/verwaltung/vorschau", params={"kommune": str(town.id)})
    narrowed = await client.get("/verwaltung/vorschau", params={"suche": "gemeinde 24"})

    assert page.text.count("<option ") == 200 + 1  # and the one shown, though beyond them
    assert f'<option value="{town.id}" selected>Stadt Borna</option>' in page.text
    assert (
        "Die Auswahl zeigt die ersten 200 von 251 Kommunen; grenzen Sie die Suche ein." in page.text
    )
    assert narrowed.text.count("<option ") == 10
    assert "grenzen Sie die Suche ein" not in narrowed.text


def _assert_links_lead_back_to_the_preview(body: str, town_id: int) -> None:
    assert "/abmelden/" not in body and "/einstellungen/" not in body
    assert f"/verwaltung/vorschau?kommune={town_id}" in body


async def test_test_send_reaches_the_operator_and_records_nothing(
    client, town, sessions, console_settings, smtp_server: SmtpServer
):
    csrf = await _signed_in(client)

    sent = await client.post(
        "/verwaltung/vorschau/testversand", data={"csrf": csrf, "kommune": str(town.id)}
    )

    assert sent.status_code == 303
    assert sent.headers["location"] == f"/verwaltung/vorschau?kommune={town.id}"
    confirmed = await client.get(sent.headers["location"])
    assert f"Testversand an {EMAIL} verschickt." in confirmed.text
    (test,) = smtp_server.handler.received
    assert test.recipients == [EMAIL]
    assert test.message["Subject"].startswith("[Test] Kommunalpartnerschaften Ukraine – ")
    assert SCHOOL in _text_of(test)
    # Following "Abmelden" in the test mail must not unsubscribe the municipality.
    _assert_links_lead_back_to_the_preview(_text_of(test), town.id)
    html_part = str(test.message.get_body(("html",)).get_content())
    _assert_links_lead_back_to_the_preview(html.unescape(html_part), town.id)
    async with sessions() as session:
        rows = await session.scalar(store.select(func.count()).select_from(store.Delivery))
    assert rows == 0

    report = await _run_digest(console_settings, sessions)  # the mark did not move
    assert report.sent == 1
    (real,) = smtp_server.handler.to(TOWN_HALL)
    assert SCHOOL in _text_of(real)

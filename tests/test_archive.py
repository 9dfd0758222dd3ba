"""The public archive: each sent period as a page of its general edition, the list of them
with its Atom feed, the digest's cap on articles and its links to the archive.

Digests go out to a real aiosmtpd server; the pages are read from the running app.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import feedparser
import httpx
import pytest

from service import digest, ingest, mailer, store
from service.config import Settings

from .helpers import BASE_URL, DEMO, running_app

BERLIN = ZoneInfo("Europe/Berlin")


def _next_monday_8am() -> datetime:
    """Just after the next weekly period end (Monday 07:00 Berlin)."""
    now = datetime.now(BERLIN)
    days = (7 - now.weekday()) % 7 or 7
    return (now + timedelta(days=days)).replace(hour=8, minute=0, second=0, microsecond=0)


async def _subscribe(sessions, name, email, partner=None, frequency="weekly"):
    async with sessions() as session, session.begin():
        subscriber = await store.create_subscriber(
            session, name=name, frequency=store.Frequency(frequency), partner=partner
        )
        return await store.add_address(session, subscriber, email, store.AddressStatus.ACTIVE)


async def _articles(sessions, *articles: dict[str, str], notify: bool = True) -> None:
    await ingest.save(sessions, ingest.parse_json(json.dumps(list(articles))), notify=notify)


def _article(title: str, published: str, place: str = "Bonn") -> dict[str, str]:
    return {"title": title, "teaser": f"Über {title}", "place": place, "published": published}


async def _run(settings: Settings, sessions, at: datetime) -> digest.RunReport:
    runner = digest.DigestRunner(settings, sessions, mailer.create_transport(settings))
    try:
        return await runner.run(at)
    finally:
        await runner._transport.close()


def _text(received) -> str:
    return received.message.get_body(("plain",)).get_content()


def _html(received) -> str:
    return received.message.get_body(("html",)).get_content()


def _links(html: str, text: str) -> list[str]:
    """The targets of the links with this text (the inlined CSS sits between)."""
    return re.findall(rf'<a href="([^"]+)"[^>]*>{re.escape(text)}</a>', html)


def _titles(received) -> list[str]:
    return [line[2:] for line in _text(received).splitlines() if line.startswith("* ")]


def _page_url(settings: Settings, frequency: store.Frequency, at: datetime) -> str:
    return digest.archive_url(settings, digest.latest_period(settings, frequency, at))


def _path(url: str) -> str:
    assert url.startswith(BASE_URL)
    return url.removeprefix(BASE_URL)


# --- a sent period's page -----------------------------------------------------------------


async def test_sent_period_has_a_page_with_its_articles_and_nothing_personal(
    mail_settings, smtp_server, engine, sessions
):
    await ingest.save(sessions, ingest.parse_listing_text(DEMO.read_text(encoding="utf-8")))
    await _subscribe(sessions, "Stadt Leipzig", "rathaus@leipzig.de", "Kyjiw")
    await _subscribe(sessions, "Gemeinde Unverwechselbar", "buero@unverwechselbar.example")
    at = _next_monday_8am()
    assert (await _run(mail_settings, sessions, at)).sent == 2
    page_url = _page_url(mail_settings, store.Frequency.WEEKLY, at)
    first_day = digest.first_day(digest.latest_period(mail_settings, store.Frequency.WEEKLY, at))
    assert page_url == f"{BASE_URL}/archiv/woechentlich/{first_day.isoformat()}"

    mails = smtp_server.handler.received
    for received in mails:
        assert f"Im Browser ansehen: {page_url}" in _text(received)
        assert _links(_html(received), "Im Browser ansehen") == [page_url]
    tokens = [
        re.search(r"/abmelden/([^>]+)>", r.message["List-Unsubscribe"]).group(1) for r in mails
    ]
    titles = _titles(smtp_server.handler.to("rathaus@leipzig.de")[0])
    assert len(titles) == 10

    async with running_app(mail_settings) as url, httpx.AsyncClient(base_url=url) as client:
        page = await client.get(_path(page_url))
        index = await client.get("/archiv")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    week = digest.period_label(digest.latest_period(mail_settings, store.Frequency.WEEKLY, at))
    assert f"<h1>{week}</h1>" in page.text and "10 Beiträge" in page.text
    shown = re.findall(r'<h2><a href="[^"]+">([^<]+)</a></h2>', page.text)
    assert sorted(shown) == sorted(_unescape(t) for t in titles)
    for personal in (
        "für Stadt Leipzig",  # the demo articles name Leipzig, the page names no subscriber
        "Aus Ihrer Partnerschaft",
        "Gemeinde Unverwechselbar",
        "rathaus@leipzig.de",
        "unverwechselbar.example",
        "/abmelden/",
        "/einstellungen/",
        *tokens,
    ):
        assert personal not in page.text, personal
    assert index.status_code == 200
    assert f'<a href="{page_url}">{week}</a>' in index.text


def _unescape(title: str) -> str:
    """A title as Jinja2 escapes it in a page."""
    return title.replace("&", "&amp;").replace('"', "&#34;").replace("'", "&#39;")


async def test_list_archive_header_names_the_period_page_unfolded(
    mail_settings, smtp_server, engine, sessions
):
    await _articles(sessions, _article("Winterhilfe", "2026-11-20"))
    await _subscribe(sessions, "Stadt Jena", "rathaus@jena.example")
    at = _next_monday_8am()
    await _run(mail_settings, sessions, at)

    (received,) = smtp_server.handler.received
    raw = received.data.decode("ascii")
    header = re.search(r"^List-Archive: (.*?)\r\n(?=\S)", raw, re.MULTILINE | re.DOTALL)
    assert header is not None
    assert header.group(1) == f"<{_page_url(mail_settings, store.Frequency.WEEKLY, at)}>"


# --- the cap ------------------------------------------------------------------------------


async def test_digest_lists_the_cap_links_the_rest_and_never_resends_it(
    mail_settings, smtp_server, engine, sessions
):
    settings = mail_settings.model_copy(update={"digest_max_articles": 25})
    # Two older articles about Leipzig, 28 newer ones about elsewhere.
    own = [_article(f"Leipzig hilft Kyjiw {n}", f"2026-10-0{n}", "Leipzig") for n in (1, 2)]
    rest = [_article(f"Nachricht {n:02}", f"2026-11-{n:02}") for n in range(1, 29)]
    await _articles(sessions, *own, *rest)
    await _subscribe(sessions, "Stadt Leipzig", "rathaus@leipzig.de", "Kyjiw")
    at = _next_monday_8am()
    await _run(settings, sessions, at)

    (received,) = smtp_server.handler.received
    page_url = _page_url(settings, store.Frequency.WEEKLY, at)
    titles = _titles(received)
    assert len(titles) == 25
    # Its own partnership first, then the rest newest first; the 5 oldest of the rest wait
    # in the archive.
    assert titles[:2] == ["Leipzig hilft Kyjiw 2", "Leipzig hilft Kyjiw 1"]
    assert titles[2:] == [f"Nachricht {n:02}" for n in range(28, 5, -1)]
    assert f"… und 5 weitere Beiträge im Archiv: {page_url}" in _text(received)
    assert _links(_html(received), "… und 5 weitere Beiträge im Archiv") == [page_url]
    async with sessions() as session:
        (row,) = (await session.scalars(store.select(store.Delivery))).all()
    assert (row.status, row.article_count) == (store.DeliveryStatus.SENT, 30)

    await _articles(sessions, _article("Danach", "2026-12-01"))
    await _run(settings, sessions, at + timedelta(days=7))
    assert _titles(smtp_server.handler.received[-1]) == ["Danach"]
    assert "im Archiv" not in _text(smtp_server.handler.received[-1])

    async with running_app(settings) as url, httpx.AsyncClient(base_url=url) as client:
        page = await client.get(_path(page_url))
    assert page.status_code == 200 and "30 Beiträge" in page.text
    assert all(f"Nachricht {n:02}</a>" in page.text for n in range(1, 6))


def test_german_count_of_what_the_digest_leaves_to_the_archive():
    assert digest.render.more_label(7275) == "7.275 weitere Beiträge"
    assert digest.render.more_label(1) == "1 weiterer Beitrag"


def test_cap_takes_own_articles_first():
    own, rest = ["o1", "o2", "o3"], ["r1", "r2"]
    assert digest.capped(own, rest, 2) == (["o1", "o2"], [], 3)
    assert digest.capped(own, rest, 4) == (["o1", "o2", "o3"], ["r1"], 1)
    assert digest.capped(own, rest, 25) == (own, rest, 0)


# --- empty periods, pagination, the feed --------------------------------------------------


@pytest.mark.smtp_replies("550")
async def test_a_period_without_a_sent_digest_or_articles_has_no_page(
    mail_settings, smtp_server, engine, sessions
):
    await _subscribe(sessions, "Stadt Jena", "rathaus@jena.example", frequency="daily")
    monday = _next_monday_8am()
    # Day 1: a backfill that notifies nobody: an empty row. Day 2: refused with 550.
    await _articles(sessions, _article("Alt", "2019-01-01"), notify=False)
    assert (await _run(mail_settings, sessions, monday)).skipped == 1
    await _articles(sessions, _article("Abgelehnt", "2026-11-20"))
    assert (await _run(mail_settings, sessions, monday + timedelta(days=1))).failed == 1
    # Day 3: sent.
    await _articles(sessions, _article("Angekommen", "2026-11-21"))
    assert (await _run(mail_settings, sessions, monday + timedelta(days=2))).sent == 1

    async with running_app(mail_settings) as url, httpx.AsyncClient(base_url=url) as client:
        answers = {
            day: await client.get(
                _path(_page_url(mail_settings, store.Frequency.DAILY, monday + timedelta(days=day)))
            )
            for day in (0, 1, 2, 9)
        }
        other = [
            await client.get(path)
            for path in (
                "/archiv/woechentlich/2026-11-23",
                "/archiv/weekly/2026-11-23",
                "/archiv/taeglich/20261123",
                "/archiv/taeglich/kein-tag",
            )
        ]
        index = await client.get("/archiv")

    assert [answers[day].status_code for day in (0, 1, 9)] == [404, 404, 404]
    assert "Diese Ausgabe gibt es im Archiv nicht." in answers[0].text
    assert answers[2].status_code == 200 and "Angekommen" in answers[2].text
    assert "Abgelehnt" in answers[2].text  # a refused row's articles go with the next
    assert [answer.status_code for answer in other] == [404] * 4
    assert index.text.count("Tagesüberblick") == 1


async def test_archive_lists_newest_period_first_in_pages_of_twenty_with_a_feed(
    mail_settings, smtp_server, engine, sessions
):
    await _subscribe(sessions, "Stadt Jena", "rathaus@jena.example", frequency="daily")
    monday = _next_monday_8am()
    days = [monday + timedelta(days=n) for n in range(21)]
    for n, at in enumerate(days):
        await _articles(sessions, _article(f"Tag {n}", "2026-11-20"))
        assert (await _run(mail_settings, sessions, at)).sent == 1
    urls = [_page_url(mail_settings, store.Frequency.DAILY, at) for at in reversed(days)]

    async with running_app(mail_settings) as url, httpx.AsyncClient(base_url=url) as client:
        first, second = await client.get("/archiv"), await client.get("/archiv?seite=2")
        beyond = [await client.get(f"/archiv?seite={s}") for s in ("3", "0", "-1", "zwei", "²")]
        feed = await client.get("/archiv/feed.atom")
        newest = await client.get(_path(urls[0]))

    def listed(page: httpx.Response) -> list[str]:
        return re.findall(r'<li><a href="([^"]+)">Tagesüberblick', page.text)

    assert listed(first) == urls[:20] and listed(second) == urls[20:]
    assert f'href="{BASE_URL}/archiv?seite=2" rel="next"' in first.text
    assert f'href="{BASE_URL}/archiv" rel="prev"' in second.text
    assert "Seite 1 von 2" in first.text and 'rel="next"' not in second.text
    assert [page.status_code for page in beyond] == [404] * 5
    assert "Tag 20" in newest.text and "Tag 19" not in newest.text

    assert feed.status_code == 200
    assert feed.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(feed.content)
    assert not parsed.bozo
    assert [entry.link for entry in parsed.entries] == urls
    assert [entry.id for entry in parsed.entries] == urls
    period = digest.latest_period(mail_settings, store.Frequency.DAILY, days[-1])
    assert parsed.entries[0].title == digest.period_label(period)
    assert parsed.entries[0].summary == "1 Beitrag"
    assert parsed.feed.link == f"{BASE_URL}/archiv"
    assert f'href="{BASE_URL}/archiv/feed.atom"' in first.text  # discoverable from the page

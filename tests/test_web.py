"""Web: the real app behind uvicorn, spoken to over HTTP."""

from __future__ import annotations

import gzip
from email.utils import format_datetime, parsedate_to_datetime

import feedparser
import httpx
import pytest
from lxml import html as lxml_html

from service import store

from .helpers import AUTH, BASE_URL, wait_until

NEW_ARTICLE = {
    "title": "Neue Partnerschaft: Borna und Irpin planen Schulaustausch",
    "teaser": "Die Städte wollen im Frühjahr 2025 Schülerinnen und Schüler austauschen.",
    "place": "Borna",
    "published": "2024-11-20",
    "topics": ["Bildung"],
}


@pytest.fixture
def app_settings(settings, demo):
    """The app serves the demo articles, imported before it started."""
    return settings


async def _feed(client: httpx.AsyncClient, settings, name: str = "artikel.atom") -> httpx.Response:
    """The feed once the server has it (built, published in the store, then loaded)."""

    async def served() -> bool:
        return (await client.get(f"/feeds/{name}")).status_code == 200

    await wait_until(served, 10, 0.1, what=f"{name} served")
    return await client.get(f"/feeds/{name}")


async def test_index_lists_articles_in_german_with_feed_autodiscovery(client, settings):
    response = await client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = lxml_html.fromstring(response.text)
    assert page.get("lang") == "de"
    assert page.find(".//h1").text_content() == "Kommunalpartnerschaften mit der Ukraine"
    headlines = [h.text_content() for h in page.iter("h2")]
    assert headlines[0].startswith("Zwei Jahre nach Kriegsbeginn")
    assert len(headlines) == 10
    assert "24. Februar 2024" in response.text
    alternates = {
        link.get("type"): link.get("href")
        for link in page.iter("link")
        if link.get("rel") == "alternate"
    }
    assert alternates == {
        "application/rss+xml": f"{BASE_URL}/feeds/artikel.xml",
        "application/atom+xml": f"{BASE_URL}/feeds/artikel.atom",
        "application/feed+json": f"{BASE_URL}/feeds/artikel.json",
    }


async def test_article_page_shows_one_article(client):
    response = await client.get(
        "/artikel/leipzig-kyjiw-eine-dynamische-partnerschaft-in-bewegten-zeiten"
    )

    assert response.status_code == 200
    page = lxml_html.fromstring(response.text)
    assert page.find(".//h1").text_content() == (
        "Leipzig – Kyjiw: Eine dynamische Partnerschaft in bewegten Zeiten"
    )
    assert "Bonn, " in response.text and "9. November 2023" in response.text


async def test_unknown_article_is_a_german_404(client):
    response = await client.get("/artikel/gibt-es-nicht")
    assert response.status_code == 404
    assert "Seite nicht gefunden" in response.text


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("artikel.xml", "application/rss+xml; charset=utf-8"),
        ("artikel.atom", "application/atom+xml; charset=utf-8"),
        ("artikel.json", "application/feed+json; charset=utf-8"),
    ],
)
async def test_feeds_are_served_with_type_etag_and_cache_control(
    client, settings, name, content_type
):
    response = await _feed(client, settings, name)

    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["etag"]
    assert response.headers["last-modified"]
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.content == (settings.feeds_dir / name).read_bytes()


async def test_if_none_match_gives_304(client, settings):
    first = await _feed(client, settings)

    again = await client.get(
        "/feeds/artikel.atom", headers={"If-None-Match": first.headers["etag"]}
    )

    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["cache-control"] == "public, max-age=300"
    other = await client.get("/feeds/artikel.atom", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200


async def test_if_modified_since_gives_304_and_older_date_gives_200(client, settings):
    first = await _feed(client, settings)
    modified = parsedate_to_datetime(first.headers["last-modified"])

    same = await client.get(
        "/feeds/artikel.atom", headers={"If-Modified-Since": first.headers["last-modified"]}
    )
    older = await client.get(
        "/feeds/artikel.atom",
        headers={"If-Modified-Since": format_datetime(modified.replace(year=2020), usegmt=True)},
    )

    assert same.status_code == 304
    assert older.status_code == 200


async def test_feeds_are_gzipped_when_asked_for(client, settings):
    await _feed(client, settings)
    gzipped = {"Accept-Encoding": "gzip"}
    async with client.stream("GET", "/feeds/artikel.atom", headers=gzipped) as response:
        wire = b"".join([chunk async for chunk in response.aiter_raw()])  # as sent, not decoded

    assert response.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["vary"]
    raw = await client.get("/feeds/artikel.atom", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert gzip.decompress(wire) == raw.content
    assert len(wire) < len(raw.content)


async def test_served_feed_parses_in_a_feed_reader(client, settings):
    response = await _feed(client, settings)
    parsed = feedparser.parse(response.content)
    assert not parsed.bozo
    assert len(parsed.entries) == 10


async def test_admin_api_requires_the_bearer_token(client):
    assert (await client.get("/api/articles")).status_code == 401
    wrong = await client.get("/api/articles", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    created = await client.post("/api/articles", json=NEW_ARTICLE)
    assert created.status_code == 401


async def test_admin_api_creates_updates_and_lists(client, settings):
    created = await client.post("/api/articles", json=NEW_ARTICLE, headers=AUTH)
    assert created.status_code == 201, created.text
    article = created.json()
    assert article["url"] == f"{BASE_URL}/artikel/{article['slug']}"

    again = await client.post("/api/articles", json=NEW_ARTICLE, headers=AUTH)
    assert again.status_code == 200 and again.json()["id"] == article["id"]

    changed = {**NEW_ARTICLE, "title": "Borna und Irpin planen einen Schulaustausch"}
    updated = await client.put(f"/api/articles/{article['slug']}", json=changed, headers=AUTH)
    assert updated.status_code == 200
    assert updated.json()["guid"] == article["guid"]
    assert updated.json()["title"] == changed["title"]

    listed = (await client.get("/api/articles", params={"limit": 5}, headers=AUTH)).json()
    assert len(listed) == 5
    assert listed[0]["title"] == "Borna und Irpin planen einen Schulaustausch"

    missing = await client.put("/api/articles/nope", json=changed, headers=AUTH)
    assert missing.status_code == 404


async def test_admin_api_says_which_articles_are_hidden(client, sessions):
    """An article hidden in the console is still the agency's: the API shows it to its
    tools, marked, and leaves it out of the list, as the site does."""
    created = (await client.post("/api/articles", json=NEW_ARTICLE, headers=AUTH)).json()
    assert created["hidden"] is None
    async with sessions() as session, session.begin():
        store.set_hidden(await store.article_by_slug(session, created["slug"]), True)

    shown = await client.get(f"/api/articles/{created['slug']}", headers=AUTH)

    assert shown.status_code == 200 and shown.json()["hidden"] is not None
    listed = (await client.get("/api/articles", params={"limit": 1000}, headers=AUTH)).json()
    assert created["id"] not in {article["id"] for article in listed}


async def test_admin_api_rejects_invalid_articles_with_reasons(client):
    bad = {**NEW_ARTICLE, "title": "Mit\x07Steuerzeichen", "published": "kein Datum"}
    response = await client.post("/api/articles", json=bad, headers=AUTH)
    assert response.status_code == 422
    fields = {tuple(e["loc"]) for e in response.json()["detail"]}
    assert ("body", "title") in fields


async def test_api_edit_reaches_the_feeds_through_the_scheduler(client, settings):
    await _feed(client, settings)
    await client.post("/api/articles", json=NEW_ARTICLE, headers=AUTH)

    atom = settings.feeds_dir / "artikel.atom"
    await wait_until(lambda: NEW_ARTICLE["title"] in atom.read_text(encoding="utf-8"), 10)
    await wait_until(lambda: (settings.feeds_dir / "themen/bildung.atom").exists(), 10)
    topic_page = await client.get("/themen/bildung")
    assert topic_page.status_code == 200 and NEW_ARTICLE["title"] in topic_page.text


async def test_healthz_reports_database_and_scheduler(client, settings):
    await _feed(client, settings)

    async def built() -> bool:
        # The files appear before the build ends (it then records what it was built from).
        return (await client.get("/healthz")).json()["last_feed_build"] is not None

    await wait_until(built, 10, what="the first feed build reported")
    response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["problems"] == []


async def test_openapi_documents_the_admin_api(client):
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/api/articles" in spec["paths"]
    assert "post" in spec["paths"]["/api/articles"]


async def test_ukrainian_topics_have_pages_of_their_own(client):
    for title, topic in (("Aus der Ukraine", "Україна"), ("Aus Kyjiw", "Київ")):
        article = {**NEW_ARTICLE, "title": title, "teaser": title, "topics": [topic]}
        assert (await client.post("/api/articles", json=article, headers=AUTH)).status_code == 201

    ukraine = await client.get("/themen/ukraina")
    kyiv = await client.get("/themen/kyiv")
    article = await client.get("/artikel/aus-kyjiw")

    assert "Thema: Україна" in ukraine.text and "Aus der Ukraine" in ukraine.text
    assert "Aus Kyjiw" not in ukraine.text
    assert "Thema: Київ" in kyiv.text and "Aus Kyjiw" in kyiv.text
    assert f'href="{BASE_URL}/themen/kyiv"' in article.text
    assert f'href="{BASE_URL}/feeds/themen/ukraina.atom"' in kyiv.text

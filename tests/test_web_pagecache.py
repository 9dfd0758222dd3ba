"""Cached pages: ETag and 304, dropped when the site changes (here or in another process),
and never for token pages."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service import metrics, store

from .helpers import AUTH, add_article, wait_until

NEW_ARTICLE = {
    "title": "Neue Partnerschaft: Borna und Irpin planen Schulaustausch",
    "teaser": "Die Städte wollen im Frühjahr 2025 Schülerinnen und Schüler austauschen.",
    "place": "Borna",
    "published": "2024-11-20",
    "topics": ["Bildung"],
}


@pytest.fixture
def app_settings(settings, demo):
    return settings


async def test_start_page_has_an_etag_and_answers_304(client):
    first = await client.get("/", headers={"Accept-Encoding": "identity"})
    again = await client.get("/", headers={"Accept-Encoding": "identity"})
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    tag = first.headers["etag"]
    assert again.headers["etag"] == tag
    assert first.headers["content-type"].startswith("text/html")

    cached = await client.get("/", headers={"Accept-Encoding": "identity", "If-None-Match": tag})
    assert cached.status_code == 304 and cached.content == b""
    zipped = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.content == first.content
    assert zipped.headers["etag"] == f'{tag[:-1]}-gz"'


async def test_an_api_change_shows_at_once(client):
    await client.get("/")
    created = await client.post("/api/articles", json=NEW_ARTICLE, headers=AUTH)
    assert created.status_code == 201
    page = await client.get("/")
    assert NEW_ARTICLE["title"] in page.text


async def test_a_change_by_another_process_shows_within_a_poll(client, sessions):
    before = await client.get("/")
    await add_article(sessions, "Ein Artikel aus einem anderen Prozess", "2025-01-15")

    async def shown() -> bool:
        return "Ein Artikel aus einem anderen Prozess" in (await client.get("/")).text

    await wait_until(shown, 10, 0.1, what="the new article on the start page")
    assert (await client.get("/")).headers["etag"] != before.headers["etag"]


async def test_error_and_token_pages_are_not_cached(client):
    for path in ("/artikel/gibt-es-nicht", "/abmelden/kein-token", "/verwaltung/anmelden"):
        response = await client.get(path)
        assert "etag" not in response.headers, path


async def test_an_edit_stamped_before_the_newest_change_still_shows(client, sessions):
    """Regression: the site version took max(updated_at), so an edit by a replica whose
    clock is behind (or by a transaction that read the clock long before it committed)
    never reached the cached pages."""
    async with sessions() as session:
        articles = await store.newest_articles(session, 50)
    newest = max(articles, key=lambda a: a.updated_at)
    edited = next(a for a in articles if a.id != newest.id)
    path = f"/artikel/{edited.slug}"
    assert (await client.get(path)).status_code == 200  # now cached
    async with sessions() as session, session.begin():
        article = await store.article_by_id(session, edited.id)
        assert article is not None
        earlier = newest.updated_at - timedelta(milliseconds=1)
        assert store.edit_article(article, article.title, "Zweite Fassung", article.topics, earlier)

    async def shown() -> bool:
        return "Zweite Fassung" in (await client.get(path)).text

    await wait_until(shown, 10, 0.1, what="the edited teaser on the article page")


def _renders() -> float:
    return (
        metrics.REGISTRY.get_sample_value("partnerpost_page_responses_total", {"source": "render"})
        or 0.0
    )


async def test_refused_requests_do_not_drop_the_cached_pages(client):
    """Regression: every request other than GET or HEAD dropped all cached pages, also a
    refused one (405, 401): anyone could make every page render anew on every request."""
    await client.get("/")
    before = _renders()
    assert (await client.post("/")).status_code == 405
    assert (await client.post("/api/articles", json=NEW_ARTICLE)).status_code == 401
    assert (await client.get("/")).status_code == 200
    assert _renders() == before


async def test_query_strings_and_encoded_paths_share_one_cached_page(client, sessions):
    """Regression: the raw path and query string made the key, so `/?1`, `/?2`, ... (or
    a slug's letters percent-encoded) each rendered and filled the cache, until real
    pages no longer fit into it."""
    async with sessions() as session:
        (article,) = await store.newest_articles(session, 1)
    slug = article.slug
    for path in ("/", f"/artikel/{slug}"):
        assert (await client.get(path)).status_code == 200
    before = _renders()
    for n in range(5):
        assert (await client.get(f"/?seite={n}")).status_code == 200
        assert (await client.get(f"/artikel/{slug}?n={n}")).status_code == 200
    encoded = f"/artikel/%{ord(slug[0]):02X}{slug[1:]}"
    assert (await client.get(encoded)).status_code == 200
    assert _renders() == before

"""The admin API for sources, and what `/healthz` and `/metrics` show of them."""

from __future__ import annotations

import asyncio
import re

import httpx

from service import store
from service.clock import utcnow
from service.sources import manage

from .feedserver import Reply, item, rss
from .helpers import ADMIN_TOKEN, running_app

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_sources_api_adds_polls_pauses_and_removes(settings, engine, feed_server):
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1")), "application/rss+xml")
    feed_server.script("/broken", Reply(500))
    # The scheduler's own polls would race the API's: not within this test.
    allowed = settings.model_copy(
        update={"sources_allow_private": True, "sources_poll_seconds": 3600}
    )
    async with running_app(allowed) as url, httpx.AsyncClient(base_url=url) as client:
        refused = await client.post("/api/sources", json={"url": feed_server.url("/feed.xml")})
        added = await client.post(
            "/api/sources",
            json={"url": feed_server.url("/feed.xml"), "name": "presse", "every": "1h"},
            headers=AUTH,
        )
        again = await client.post(
            "/api/sources", json={"url": feed_server.url("/x"), "name": "presse"}, headers=AUTH
        )
        invalid = await client.post(
            "/api/sources", json={"url": "ftp://example.org/", "format": "pdf"}, headers=AUTH
        )
        unparsable = await client.post(
            "/api/sources", json={"url": "http://\u2013]\\\u00045p"}, headers=AUTH
        )
        bracketed = await client.post(
            "/api/sources", json={"url": "http://example.org]/feed"}, headers=AUTH
        )
        slashed = await client.post(
            "/api/sources", json={"url": feed_server.url("/x"), "name": "a/b"}, headers=AUTH
        )
        await client.post(
            "/api/sources", json={"url": feed_server.url("/broken"), "name": "kaputt"}, headers=AUTH
        )
        polled = await client.post("/api/sources/presse/poll", headers=AUTH)
        await client.post("/api/sources/kaputt/poll", headers=AUTH)
        health = await client.get("/healthz")
        metrics = await client.get("/metrics")
        paused = await client.post("/api/sources/presse/pause", headers=AUTH)
        listed = await client.get("/api/sources", headers=AUTH)
        removed = await client.delete("/api/sources/presse", headers=AUTH)
        missing = await client.get("/api/sources/presse", headers=AUTH)
        articles = await client.get("/api/articles", headers=AUTH)
        schema = await client.get("/openapi.json")

    assert refused.status_code == 401
    assert added.status_code == 201 and added.json()["every"] == "1h"
    assert again.status_code == 409 and "exists already" in again.json()["detail"]
    assert invalid.status_code == 422
    assert slashed.status_code == 422
    # Regression (found by the API fuzzer): a URL that does not parse was a 500.
    assert unparsable.status_code == bracketed.status_code == 422
    assert ["body", "url"] in [error["loc"] for error in bracketed.json()["detail"]]
    assert ["body", "name"] in [error["loc"] for error in slashed.json()["detail"]]
    assert polled.status_code == 200
    assert polled.json()[0] | {"error": None} == {
        "name": "presse",
        "outcome": "ok",
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
        "rejected": 0,
        "error": None,
    }
    assert health.status_code == 200 and health.json()["status"] == "ok"
    (failing,) = health.json()["failing_sources"]
    assert (failing["name"], failing["http_status"], failing["failures"]) == ("kaputt", 500, 1)
    assert re.search(
        r'^partnerpost_source_fetches_total\{outcome="ok",source="presse"\} [1-9]',
        metrics.text,
        re.MULTILINE,
    )
    assert re.search(
        r'^partnerpost_source_last_success_timestamp_seconds\{source="presse"\} 1\.7',
        metrics.text,
        re.MULTILINE,
    )
    assert paused.json()["status"] == "paused" and paused.json()["next_fetch"] is None
    assert sorted(s["name"] for s in listed.json()) == ["kaputt", "presse"]
    assert removed.status_code == 204 and missing.status_code == 404
    assert [a["title"] for a in articles.json()] == ["Erster"]
    assert {"/api/sources", "/api/sources/{name}/poll"} <= set(schema.json()["paths"])


async def test_the_scheduler_polls_due_sources_and_feeds_and_pages_name_the_source(
    settings, engine, sessions, feed_server
):
    link = "https://www.leipzig.de/presse/1"
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1", link=link)), "application/rss+xml")
    await manage.add(
        sessions, manage.SourceIn(url=feed_server.url("/feed.xml"), name="presse"), utcnow()
    )
    fast = settings.model_copy(update={"sources_allow_private": True, "sources_poll_seconds": 1})
    async with running_app(fast) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(300):
            async with sessions() as session:
                if await store.count_articles(session):
                    break
            await asyncio.sleep(0.05)
        (article,) = (await client.get("/api/articles", headers=AUTH)).json()
        page = await client.get(f"/artikel/{article['slug']}")
        for _ in range(300):
            atom = settings.feeds_dir / "artikel.atom"
            if atom.exists() and b"Erster" in atom.read_bytes():
                break
            await asyncio.sleep(0.05)

    assert f'Quelle: <a href="{link}">www.leipzig.de</a>' in page.text
    assert f'Quelle: &lt;a href="{link}"&gt;www.leipzig.de&lt;/a&gt;' in atom.read_text()

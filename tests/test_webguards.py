"""Web guards: hostile bodies, oversized bodies and HEAD, against the real app over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from .helpers import AUTH, sqlite_only, wait_until

HOSTILE_BODIES = [
    pytest.param(b"[Infinity]", "application/json", id="infinity"),
    pytest.param(b"NaN", "application/json", id="nan"),
    pytest.param(b"1e99999", "application/json", id="overflowing-number"),
    pytest.param(b'"\\ud800"', "application/json", id="lone-surrogate"),
    pytest.param(b"\xff\xfe\x00", "text/plain", id="no-utf8-as-text"),
    pytest.param(b"\xff\xfe\x00", None, id="no-utf8-without-type"),
    pytest.param(b"[" * 100_000, "application/json", id="nested-100000-deep"),
    pytest.param(b'{"name": "Stadt \\udc80", "email": "a@b.de"}', "application/json", id="sur"),
    pytest.param(b'{"name": NaN, "email": "a@b.de"}', "application/json", id="nan-field"),
]

GERMAN = {
    "Die Anfrage ist kein gültiges JSON.",
    "Erwartet wird ein JSON-Objekt mit mindestens den Feldern name und email.",
}
GERMAN_FIELDS = {"Kommune", "E-Mail-Adresse"}


def _headers(content_type: str | None, admin: bool = False) -> dict[str, str]:
    headers = dict(AUTH) if admin else {}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


@sqlite_only
@pytest.mark.parametrize(("body", "content_type"), HOSTILE_BODIES)
async def test_public_api_answers_hostile_bodies_with_a_german_422(client, body, content_type):
    response = await client.post("/api/abonnements", content=body, headers=_headers(content_type))

    assert response.status_code in {400, 422}, response.text
    details = response.json()["detail"]
    if response.status_code == 400:  # a body that is no document at all
        assert details == "Die Anfrage ist kein lesbares JSON-Dokument."
        return
    assert details and all(set(d) == {"loc", "msg", "type"} for d in details)
    assert all(d["msg"] in GERMAN or d["msg"].split(":")[0] in GERMAN_FIELDS for d in details)


@sqlite_only
@pytest.mark.parametrize(("body", "content_type"), HOSTILE_BODIES)
async def test_admin_api_answers_hostile_bodies_with_422(client, body, content_type):
    for method, path in (("POST", "/api/articles"), ("PUT", "/api/articles/gibt-es-nicht")):
        response = await client.request(
            method, path, content=body, headers=_headers(content_type, admin=True)
        )

        assert response.status_code in {400, 422}, (method, response.text)
        if response.status_code == 422:
            assert set(response.json()["detail"][0]) == {"loc", "msg", "type"}


@sqlite_only
async def test_public_api_explains_a_bad_address_in_german(client):
    response = await client.post("/api/abonnements", json={"name": "Stadt Borna", "email": "x"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("E-Mail-Adresse: bitte")


@sqlite_only
async def test_a_body_over_the_limit_gets_413_on_both_apis(client, settings):
    too_large = json.dumps({"name": "x" * settings.max_body_bytes, "email": "a@b.de"})

    public = await client.post("/api/abonnements", content=too_large)
    admin = await client.post("/api/articles", content=too_large, headers=AUTH)

    # Refused by its Content-Length before a byte of it is read (Starlette's own answer).
    assert public.status_code == 413
    assert admin.status_code == 413


@sqlite_only
async def test_a_chunked_body_over_the_limit_gets_413(client, settings):
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b" " * 65536

    response = await client.post(
        "/api/abonnements", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["detail"] == "Die Anfrage ist zu groß: höchstens 1.048.576 Bytes."


@sqlite_only
async def test_a_422_does_not_echo_a_large_input(client):
    nearly_a_megabyte = "<" * 400_000  # twice in one body, still under the limit
    article = {"title": nearly_a_megabyte, "teaser": "t", "place": "p", "published": "2024-1-1"}
    subscriber = {"name": nearly_a_megabyte, "email": "a@b.de", nearly_a_megabyte: 1}

    admin = await client.post("/api/articles", json=article, headers=AUTH)
    public = await client.post("/api/abonnements", json=subscriber)

    assert admin.status_code == public.status_code == 422
    assert len(admin.content) < 5_000
    assert len(public.content) < 5_000


# --- HEAD ---------------------------------------------------------------------------------


# These tests pass whether the demo is imported before the app starts or after.


@sqlite_only
@pytest.mark.parametrize("path", ["/", "/healthz", "/abonnieren", "/themen/gibt-es-nicht"])
async def test_head_answers_like_get_without_a_body(demo, client, path):
    get = await client.get(path)
    head = await client.head(path)

    assert head.status_code == get.status_code != 405
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    if path != "/healthz":  # its body carries the time of the last run, which may move
        assert head.headers["content-length"] == get.headers["content-length"]


@sqlite_only
async def test_head_on_an_article_and_a_feed(demo, client, settings):
    index = await client.get("/")
    article_path = next(
        line.split('href="', 1)[1].split('"', 1)[0]
        for line in index.text.splitlines()
        if "/artikel/" in line and "<h2>" in line
    ).removeprefix(str(settings.base_url).rstrip("/"))

    # the scheduler builds the feeds and the server loads them within a second or two
    async def feed_served() -> bool:
        answer = await client.get("/feeds/artikel.atom")
        return answer.status_code == 200 and b"<entry>" in answer.content

    await wait_until(feed_served, 10, 0.1, what="a feed")

    article = await client.head(article_path)
    feed_get = await client.get("/feeds/artikel.atom")
    feed_head = await client.head("/feeds/artikel.atom")

    assert article.status_code == 200, article_path
    assert article.content == b""
    assert int(article.headers["content-length"]) > 0
    assert feed_head.status_code == feed_get.status_code == 200
    assert feed_head.content == b""
    assert feed_head.headers["etag"] == feed_get.headers["etag"]
    assert feed_head.headers["content-length"] == feed_get.headers["content-length"]


@sqlite_only
async def test_head_on_a_post_only_route_is_405(client):
    response = await client.head("/api/abonnements")

    assert response.status_code == 405

"""Feeds over HTTP from memory: encodings, ETags per encoding, conditional GETs, HEAD,
unknown paths and traversal; and two `serve` processes that share only PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip

import brotli
import httpx
import pytest

from .helpers import (
    AUTH,
    DEMO,
    cli_env,
    postgres_only,
    run,
    serve,
    wait_until,
    wait_until_blocking,
)

FEED = "/feeds/artikel.atom"
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


async def _served(client: httpx.AsyncClient, path: str = FEED) -> httpx.Response:
    async def answered() -> bool:
        return (await client.get(path)).status_code == 200

    await wait_until(answered, 10, 0.1, what=f"{path} served")
    return await client.get(path, headers={"Accept-Encoding": "identity"})


async def _sent_bytes(client: httpx.AsyncClient, encoding: str) -> tuple[httpx.Response, bytes]:
    async with client.stream("GET", FEED, headers={"Accept-Encoding": encoding}) as response:
        return response, b"".join([chunk async for chunk in response.aiter_raw()])


async def test_feed_is_sent_gzip_or_brotli_with_an_etag_of_its_own(client):
    plain = await _served(client)
    gzipped, gzip_bytes = await _sent_bytes(client, "gzip")
    brotlied, brotli_bytes = await _sent_bytes(client, "br")

    assert "content-encoding" not in plain.headers
    assert gzipped.headers["content-encoding"] == "gzip"
    assert brotlied.headers["content-encoding"] == "br"
    assert gzip.decompress(gzip_bytes) == plain.content
    assert brotli.decompress(brotli_bytes) == plain.content
    assert len(brotli_bytes) < len(plain.content) and len(gzip_bytes) < len(plain.content)
    assert int(gzipped.headers["content-length"]) == len(gzip_bytes)
    tag = plain.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"')
    assert gzipped.headers["etag"] == f'{tag[:-1]}-gz"'
    assert brotlied.headers["etag"] == f'{tag[:-1]}-br"'
    for response in (plain, gzipped, brotlied):
        assert response.headers["vary"] == "Accept-Encoding"
        assert response.headers["cache-control"] == "public, max-age=300"
        assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
        assert response.headers["last-modified"] == plain.headers["last-modified"]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("gzip, deflate, br", "br"),
        ("gzip;q=1.0, br;q=0.5", "gzip"),
        ("x-gzip", "gzip"),
        ("br;q=0, gzip;q=0", None),
        ("*", "br"),
        ("*;q=0.3, gzip;q=0.2", "br"),
        ("identity", None),
        ("deflate", None),
        ("gzip;q=abc", None),
        ("", None),
        ("identity;q=0, gzip;q=0.1", "gzip"),
        # Identity not named is acceptable but least preferred: any coding with q > 0 wins.
        ("gzip;q=0.5, br;q=0.9", "br"),
        ("gzip;q=0.001", "gzip"),
        ("identity;q=1, gzip;q=0.5", None),
    ],
)
async def test_accept_encoding_q_values_choose_the_coding(client, accept, expected):
    await _served(client)
    response, _ = await _sent_bytes(client, accept)
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == expected


async def test_if_none_match_lists_star_and_weak_tags_give_304(client):
    tag = (await _served(client)).headers["etag"]
    identity = {"Accept-Encoding": "identity"}

    for header in (tag, f'"other", {tag}', f"W/{tag}", "*", f'"a",W/{tag} , "b"'):
        response = await client.get(FEED, headers={**identity, "If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == tag
        assert response.headers["cache-control"] == "public, max-age=300"
    for header in ('"other"', tag[1:-1], f'{tag[:-1]}x"'):
        response = await client.get(FEED, headers={**identity, "If-None-Match": header})
        assert response.status_code == 200, header


async def test_an_etag_of_one_encoding_does_not_validate_another(client):
    tag = (await _served(client)).headers["etag"]
    gzip_tag = f'{tag[:-1]}-gz"'

    as_gzip = await client.get(FEED, headers={"Accept-Encoding": "gzip", "If-None-Match": tag})
    assert as_gzip.status_code == 200 and as_gzip.headers["etag"] == gzip_tag
    again = await client.get(FEED, headers={"Accept-Encoding": "gzip", "If-None-Match": gzip_tag})
    assert again.status_code == 304 and again.headers["etag"] == gzip_tag


async def test_if_modified_since_counts_only_without_if_none_match(client):
    plain = await _served(client)
    modified = plain.headers["last-modified"]

    same = await client.get(FEED, headers={"If-Modified-Since": modified})
    assert same.status_code == 304
    earlier = await client.get(FEED, headers={"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"})
    assert earlier.status_code == 200
    unreadable = await client.get(FEED, headers={"If-Modified-Since": "gestern"})
    assert unreadable.status_code == 200
    both = await client.get(FEED, headers={"If-Modified-Since": modified, "If-None-Match": '"x"'})
    assert both.status_code == 200


async def test_head_sends_the_headers_of_get_without_a_body(client):
    plain = await _served(client)
    head = await client.head(FEED, headers={"Accept-Encoding": "identity"})

    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(plain.content))
    for name in ("etag", "last-modified", "content-type", "cache-control", "vary"):
        assert head.headers[name] == plain.headers[name]
    tagged = await client.head(
        FEED, headers={"Accept-Encoding": "identity", "If-None-Match": plain.headers["etag"]}
    )
    assert tagged.status_code == 304


async def test_unknown_feed_and_other_methods(client):
    await _served(client)
    for path in ("/feeds/gibt-es-nicht.xml", "/feeds/", "/feeds/artikel", "/feeds/ARTIKEL.ATOM"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "Seite nicht gefunden" in response.text
    posted = await client.post(FEED)
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"


async def _raw(url: str, target: str) -> bytes:
    """Send a request line as written (no client normalizes `..` away)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_paths_that_climb_out_of_the_feeds_are_404(client, settings):
    await _served(client)
    assert (settings.feeds_dir.parent / "store.sqlite3").exists() or "postgresql" in str(
        settings.database_url
    )
    for target in (
        "/feeds/../store.sqlite3",
        "/feeds/%2e%2e/store.sqlite3",
        "/feeds/..%2fstore.sqlite3",
        "/feeds/themen/../../store.sqlite3",
        "/feeds//etc/passwd",
        "/feeds/%2fetc%2fpasswd",
        "/feeds/artikel.atom/../../store.sqlite3",
    ):
        answer = await _raw(str(client.base_url), target)
        assert answer.startswith(b"HTTP/1.1 404 "), (target, answer[:80])
        assert b"SQLite format" not in answer and b"root:" not in answer


async def test_a_feed_no_longer_called_for_is_404(client):
    await _served(client)
    created = await client.post("/api/articles", json=NEW_ARTICLE, headers=AUTH)
    assert created.status_code == 201
    await _served(client, "/feeds/themen/bildung.atom")

    moved = {**NEW_ARTICLE, "topics": ["Energie"]}
    slug = created.json()["slug"]
    assert (await client.put(f"/api/articles/{slug}", json=moved, headers=AUTH)).status_code == 200

    async def gone() -> bool:
        return (await client.get("/feeds/themen/bildung.atom")).status_code == 404

    await wait_until(gone, 10, 0.1, what="the topic feed removed")


# --- two replicas on one PostgreSQL -----------------------------------------------------


def _get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers={"Accept-Encoding": "identity", **headers}, timeout=10)


@postgres_only
def test_two_servers_on_one_database_serve_the_same_feed(settings, tmp_path):
    assert run(settings, "ingest", str(DEMO)).returncode == 0
    folders = [tmp_path / "a", tmp_path / "b"]
    envs = []
    for folder in folders:
        folder.mkdir()
        envs.append(cli_env(settings, PARTNERPOST_FEEDS_DIR=str(folder / "feeds")))
    with serve(envs[0], folders[0]) as a, serve(envs[1], folders[1]) as b:
        for served in (a, b):
            wait_until_blocking(lambda s=served: _get(s.url + FEED).status_code == 200, 20)

        created = httpx.post(a.url + "/api/articles", json=NEW_ARTICLE, headers=AUTH, timeout=10)
        assert created.status_code == 201
        for served in (b, a):
            wait_until_blocking(
                lambda s=served: NEW_ARTICLE["title"] in _get(s.url + FEED).text,
                15,
                what=f"the new article in {served.url}'s feed",
            )

        from_a, from_b = _get(a.url + FEED), _get(b.url + FEED)
        assert from_a.content == from_b.content
        for name in ("etag", "last-modified", "content-type"):
            assert from_a.headers[name] == from_b.headers[name], name
        assert _get(b.url + FEED, **{"If-None-Match": from_a.headers["etag"]}).status_code == 304
        # Each exports into its own folder, the same bytes.
        for folder in folders:
            wait_until_blocking(
                lambda f=folder: (f / "feeds/artikel.atom").read_bytes() == from_a.content, 10
            )

        topic = "/feeds/themen/bildung.xml"
        for served in (a, b):
            wait_until_blocking(lambda s=served: _get(s.url + topic).status_code == 200, 15)
        slug = created.json()["slug"]
        moved = {**NEW_ARTICLE, "topics": ["Energie"]}
        changed = httpx.put(f"{a.url}/api/articles/{slug}", json=moved, headers=AUTH, timeout=10)
        assert changed.status_code == 200
        for served in (a, b):
            wait_until_blocking(
                lambda s=served: _get(s.url + topic).status_code == 404,
                15,
                what=f"the removed topic feed gone from {served.url}",
            )
        assert not (folders[1] / "feeds/themen/bildung.xml").exists()

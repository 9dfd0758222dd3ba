"""The source fetcher against a real HTTP server on loopback: conditional GET, gzip,
limits, redirects, Retry-After, and the refusal of loopback and private addresses."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime

import pytest

from service.config import Settings
from service.sources.fetch import Fetcher, SourceFetchError, is_public, retry_after

from .feedserver import Reply, rss

LIMIT = 4096


def _settings(**changes: object) -> Settings:
    values: dict[str, object] = {
        "_env_file": None,
        "base_url": "https://partnerpost.example.org",
        "sources_allow_private": True,
        "sources_timeout_seconds": 1.0,
        "sources_max_bytes": LIMIT,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


async def _fetch(url: str, settings: Settings | None = None, **validators: str | None):
    async with Fetcher(settings or _settings()) as fetcher:
        return await fetcher.fetch(url, **validators)


async def test_second_fetch_is_conditional_and_answered_304(feed_server):
    feed_server.publish("/feed.xml", rss(), "application/rss+xml")
    first = await _fetch(feed_server.url("/feed.xml"))
    second = await _fetch(
        feed_server.url("/feed.xml"), etag=first.etag, last_modified=first.last_modified
    )

    assert first.status == 200 and first.content == rss().encode()
    assert second.not_modified and second.content is None
    request = feed_server.seen("/feed.xml")[1]
    assert request.headers["if-none-match"] == first.etag
    assert request.headers["if-modified-since"] == first.last_modified


async def test_requests_ask_for_gzip_and_name_partnerpost_and_its_url(feed_server):
    feed_server.publish("/feed.xml", rss(), "application/rss+xml")
    fetched = await _fetch(feed_server.url("/feed.xml"))

    headers = feed_server.seen("/feed.xml")[0].headers
    assert "gzip" in headers["accept-encoding"]
    assert headers["user-agent"].startswith("partnerpost/")
    assert "(+https://partnerpost.example.org)" in headers["user-agent"]
    assert fetched.content == rss().encode()  # unpacked


async def test_redirects_are_followed_up_to_five(feed_server):
    feed_server.publish("/feed.xml", rss(), "application/rss+xml")
    feed_server.script("/old", Reply(301, headers={"Location": "/feed.xml"}))
    for n in range(7):
        feed_server.script(f"/hop{n}", Reply(302, headers={"Location": f"/hop{n + 1}"}))

    fetched = await _fetch(feed_server.url("/old"))
    with pytest.raises(SourceFetchError, match="more than 5 redirects"):
        await _fetch(feed_server.url("/hop0"))

    assert fetched.url == feed_server.url("/feed.xml")


async def test_a_redirect_loop_is_refused(feed_server):
    feed_server.script("/a", Reply(302, headers={"Location": "/b"}))
    feed_server.script("/b", Reply(302, headers={"Location": "/a"}))

    with pytest.raises(SourceFetchError, match="redirect loop"):
        await _fetch(feed_server.url("/a"))
    assert len(feed_server.requests) == 2


async def test_a_server_slower_than_the_timeout_fails_in_time(feed_server):
    feed_server.script("/slow", Reply(200, b"late", delay=2.5))
    started = time.monotonic()

    with pytest.raises(SourceFetchError, match="within 1 s"):
        await _fetch(feed_server.url("/slow"))
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("chunks", [0, 8], ids=["content-length", "chunked"])
async def test_a_body_beyond_the_limit_is_refused(feed_server, chunks):
    body = b"x" * (LIMIT + 1) if not chunks else b"x" * (LIMIT // 4)
    feed_server.script("/huge", Reply(200, body, chunks=chunks))

    with pytest.raises(SourceFetchError, match=f"limit of {LIMIT} bytes"):
        await _fetch(feed_server.url("/huge"))


async def test_errors_carry_the_status_and_retry_after(feed_server):
    feed_server.script("/busy", Reply(503, headers={"Retry-After": "120"}))
    feed_server.script("/broken", Reply(500))

    with pytest.raises(SourceFetchError) as busy:
        await _fetch(feed_server.url("/busy"))
    with pytest.raises(SourceFetchError) as broken:
        await _fetch(feed_server.url("/broken"))

    assert (busy.value.status, busy.value.retry_after) == (503, 120.0)
    assert (broken.value.status, broken.value.retry_after) == (500, None)
    assert "HTTP 500" in str(broken.value)


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
    assert retry_after("30", now) == 30
    assert retry_after("Mon, 04 Mar 2024 10:05:00 GMT", now) == 300
    assert retry_after("Mon, 04 Mar 2024 09:00:00 GMT", now) == 0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


async def test_loopback_is_refused_without_the_setting(feed_server):
    feed_server.publish("/feed.xml", rss(), "application/rss+xml")
    strict = _settings(sources_allow_private=False)
    port = feed_server.base.rsplit(":", 1)[1]

    for url in (feed_server.url("/feed.xml"), f"http://localhost:{port}/feed.xml"):
        with pytest.raises(SourceFetchError, match="PARTNERPOST_SOURCES_ALLOW_PRIVATE"):
            await _fetch(url, strict)
    assert feed_server.requests == []


async def test_a_redirect_to_a_refused_address_is_not_followed(feed_server):
    """The guard checks every hop: a public source may not redirect into the network."""
    port = feed_server.base.rsplit(":", 1)[1]
    feed_server.script("/out", Reply(302, headers={"Location": f"http://127.0.0.2:{port}/x"}))
    only_first = ipaddress.ip_address("127.0.0.1")

    async with Fetcher(_settings(), allowed=lambda address: address == only_first) as fetcher:
        with pytest.raises(SourceFetchError, match=r"127\.0\.0\.2"):
            await fetcher.fetch(feed_server.url("/out"))
    assert [r.path for r in feed_server.requests] == ["/out"]


async def test_only_http_and_https_are_fetched():
    with pytest.raises(SourceFetchError, match="only http and https"):
        await _fetch("file:///etc/passwd")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.178.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fd00::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        # 6to4 and NAT64 carry an IPv4 address a gateway forwards to.
        ("2002:7f00:1::", False),
        ("2002:5db8:d822::1", True),
        ("64:ff9b::7f00:1", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b:1::a00:1", False),
        ("64:ff9b::5db8:d822", True),
    ],
)
def test_only_public_addresses_count_as_public(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


async def test_a_host_that_does_not_resolve_fails_as_a_fetch_error():
    """Regression: the resolver's error escaped as httpcore.ConnectError, so the poller
    neither counted the failure nor backed off."""
    with pytest.raises(SourceFetchError, match=r"cannot resolve 'no-such-host\.invalid'"):
        await _fetch("http://no-such-host.invalid/feed.xml")

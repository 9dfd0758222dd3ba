"""WebSub: with a hub set, a build that changed feeds sends the hub a publish ping per changed
feed, retried while the hub refuses; the hub stand-in is a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import feeds, metrics, scheduler
from service.config import load_settings
from service.errors import ConfigurationError

from .helpers import add_article, serving, wait_until


@dataclass
class Hub:
    """Answers the first `refusals` pings with 503, then 202; records what it took."""

    refusals: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)
    taken: list[dict[str, str]] = field(default_factory=list)

    async def ping(self, request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        if len(self.refused) < self.refusals:
            self.refused.append(form)
            return Response(status_code=503)
        self.taken.append(form)
        return Response(status_code=202)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hub", self.ping, methods=["POST"])])


@contextmanager
def counted() -> Iterator[dict[str, float]]:
    before = {
        outcome: metrics.WEBSUB_PINGS.labels(outcome)._value.get()
        for outcome in ("sent", "retried", "failed")
    }
    after: dict[str, float] = {}
    yield after
    for outcome, value in before.items():
        after[outcome] = metrics.WEBSUB_PINGS.labels(outcome)._value.get() - value


async def test_a_refused_ping_is_retried_until_the_hub_takes_it():
    hub = Hub(refusals=1)
    urls = ["https://partnerpost.example.org/feeds/artikel.atom"]
    async with serving(hub.app()) as base:
        with counted() as count:
            taken = await feeds.websub.publish(f"{base}/hub", urls, pause=0.01)

    assert taken == 1
    ping = {"hub.mode": "publish", "hub.url": urls[0]}
    assert hub.refused == [ping]
    assert hub.taken == [ping]
    assert count == {"sent": 1, "retried": 1, "failed": 0}


async def test_a_hub_that_never_takes_a_ping_is_given_up_on_without_an_error():
    hub = Hub(refusals=10**6)
    async with serving(hub.app()) as base:
        with counted() as count:
            taken = await feeds.websub.publish(f"{base}/hub", ["https://x.example/f"], pause=0)

    assert taken == 0
    assert len(hub.refused) == feeds.websub.ATTEMPTS
    assert count == {"sent": 0, "retried": feeds.websub.ATTEMPTS - 1, "failed": 1}


async def test_a_build_that_changed_feeds_pings_the_hub_for_each(settings, engine, sessions):
    hub = Hub(refusals=1)
    async with serving(hub.app()) as base:
        hubbed = settings.model_copy(update={"websub_hub": f"{base}/hub"})
        refresher = scheduler.FeedRefresher(hubbed, engine, sessions)
        await add_article(sessions, "Neu", "2024-05-01", topics=["Energie"])

        report = await refresher.refresh()

        assert report is not None and len(report.changed) == 6
        expected = sorted(hubbed.link(f"feeds/{path}") for path in report.changed)
        await wait_until(lambda: len(hub.taken) == 6, 30, what="six pings")
        assert sorted(ping["hub.url"] for ping in hub.taken) == expected
        assert len(hub.refused) == 1  # refused once, then taken on the retry
        atom = (settings.feeds_dir / "artikel.atom").read_text("utf-8")
        assert f'<link href="{base}/hub" rel="hub"/>' in atom

        assert await refresher.refresh() is None  # nothing changed: no build, no ping
        await refresher.stop_pings()
    assert len(hub.taken) == 6


async def test_without_a_hub_a_build_pings_nothing_and_names_no_hub(settings, engine, sessions):
    refresher = scheduler.FeedRefresher(settings, engine, sessions)
    await add_article(sessions, "Neu", "2024-05-01")

    report = await refresher.refresh()

    assert report is not None and report.changed
    assert refresher._pings == set()
    for name in ("artikel.xml", "artikel.atom", "artikel.json"):
        assert "hub" not in (settings.feeds_dir / name).read_text("utf-8")


def test_a_hub_that_is_no_http_url_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("PARTNERPOST_WEBSUB_HUB", "hub.example.org/ohne-schema")
    with pytest.raises(ConfigurationError, match=re.escape("PARTNERPOST_WEBSUB_HUB='hub.ex")):
        load_settings(_env_file=None)


def test_a_hub_url_is_taken_from_the_environment(monkeypatch):
    monkeypatch.setenv("PARTNERPOST_WEBSUB_HUB", "https://hub.example.org/")
    assert load_settings(_env_file=None).hub_url == "https://hub.example.org/"
    monkeypatch.delenv("PARTNERPOST_WEBSUB_HUB")
    assert load_settings(_env_file=None).hub_url is None


async def test_builds_while_the_hub_is_slow_ping_each_feed_once_more_not_once_per_build(
    settings, engine, sessions
):
    """Regression: each build started pings of its own, so while the hub hung or refused,
    every build added a full set of pings (a full build: thousands of URLs, retried for
    minutes each) and the hub got each feed once per build when it came back."""
    held = asyncio.Event()
    taken: list[str] = []

    async def ping(request: Request) -> Response:
        await held.wait()
        taken.append(str((await request.form())["hub.url"]))
        return Response(status_code=202)

    hub = Starlette(routes=[Route("/hub", ping, methods=["POST"])])
    async with serving(hub) as base:
        hubbed = settings.model_copy(update={"websub_hub": f"{base}/hub"})
        refresher = scheduler.FeedRefresher(hubbed, engine, sessions)
        for n in range(3):
            await add_article(sessions, f"Neu {n}", f"2024-05-0{n + 1}")
            assert await refresher.refresh() is not None
        held.set()
        await asyncio.wait_for(asyncio.gather(*refresher._pings), 30)  # every ping done
    main = hubbed.link("feeds/artikel.atom")
    assert taken.count(main) == 2  # the first build's, then one for the two after it

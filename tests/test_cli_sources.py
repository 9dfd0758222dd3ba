"""`partnerpost sources ...`, run as a real subprocess against a feed server on loopback
(the subprocess is awaited, so the test's event loop keeps serving the feed)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from service.config import Settings

from .feedserver import item, rss

PARTNERPOST = str(Path(sys.executable).parent / "partnerpost")
RSS = "application/rss+xml"
pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


async def _cli(settings: Settings, *args: str, **env: str) -> tuple[int, str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERPOST_")}
    environment.update(
        PARTNERPOST_DATABASE_URL=settings.database_url,
        PARTNERPOST_FEEDS_DIR=str(settings.feeds_dir),
        PARTNERPOST_BASE_URL=settings.public_url,
        **env,
    )
    process = await asyncio.create_subprocess_exec(
        PARTNERPOST,
        *args,
        env=environment,
        cwd=settings.feeds_dir.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_add_poll_list_show_pause_resume_remove(settings, feed_server):
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1"), item("Zweiter", "urn:2")), RSS)
    url = feed_server.url("/feed.xml")
    allowed = {"PARTNERPOST_SOURCES_ALLOW_PRIVATE": "true"}

    added = await _cli(settings, "sources", "add", url, "--name", "presse", "--topic", "Presse")
    twice = await _cli(settings, "sources", "add", url, "--name", "presse")
    polled = await _cli(settings, "sources", "poll", "presse", **allowed)
    listed = await _cli(settings, "sources", "list")
    paused = await _cli(settings, "sources", "pause", "presse")
    shown = await _cli(settings, "sources", "show", "presse")
    resumed = await _cli(settings, "sources", "resume", "presse")
    removed = await _cli(settings, "sources", "remove", "presse")
    articles = await _cli(settings, "articles", "list")

    assert added[0] == 0 and "source 'presse' added" in added[1]
    assert twice[0] == 2 and "exists already" in twice[2]
    assert polled[0] == 0, polled
    assert "presse: ok, 2 new, 0 updated" in polled[1]
    assert "presse" in listed[1] and "200" in listed[1]
    assert paused[0] == 0 and resumed[0] == 0
    view = json.loads(shown[1])
    assert (view["status"], view["articles"], view["http_status"]) == ("paused", 2, 200)
    assert view["topics"] == ["Presse"] and view["every"] == "15m"
    assert "its 2 article(s) stay" in removed[1]
    assert "Erster" in articles[1] and "Zweiter" in articles[1]
    assert (settings.feeds_dir / "artikel.atom").exists()


async def test_polling_fails_with_exit_2_and_the_reason(settings, feed_server):
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1")), RSS)
    await _cli(settings, "sources", "add", feed_server.url("/feed.xml"), "--name", "presse")

    refused = await _cli(settings, "sources", "poll")
    unknown = await _cli(settings, "sources", "poll", "nirgends")
    bad_interval = await _cli(settings, "sources", "add", "https://example.org/", "--every", "5s")

    assert refused[0] == 2 and "PARTNERPOST_SOURCES_ALLOW_PRIVATE" in refused[1]
    assert feed_server.requests == []
    assert unknown[0] == 2 and "no source named 'nirgends'" in unknown[2]
    assert bad_interval[0] == 2 and "not between 1m and 7d" in bad_interval[2]

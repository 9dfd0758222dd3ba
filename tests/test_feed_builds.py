"""Feed builds: a build that finds nothing changed renders nothing; every input a feed shows
makes the next build render again; a changed article renders only the feeds it is in, and
those equal what a build from scratch makes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete

from service import feeds, ingest, store
from service.config import Settings

from .helpers import add_article, import_demo

Change = Callable[..., Awaitable[Settings | None]]


async def _build(settings: Settings, engine, sessions) -> feeds.BuildReport:
    report = await feeds.build_feeds(settings, engine, sessions, force=True)
    assert report is not None
    return report


async def _municipality(sessions, name: str, partner: str | None = None) -> None:
    async with sessions() as session, session.begin():
        await store.create_subscriber(
            session, name=name, partner=partner, frequency=store.Frequency.WEEKLY
        )


async def test_a_build_that_finds_nothing_changed_renders_nothing(sessions, settings, engine):
    await import_demo(sessions)
    await _build(settings, engine, sessions)
    (settings.feeds_dir / "artikel.xml").unlink()  # only a render would bring it back

    report = await _build(settings, engine, sessions)

    assert (report.written, report.changed, report.unchanged) == ([], [], 3)
    assert not (settings.feeds_dir / "artikel.xml").exists()


async def _edit_article(sessions, settings):
    await add_article(sessions, "Neu", "2024-05-01", teaser="erste Fassung")
    await add_article(sessions, "Neu", "2024-05-01", teaser="zweite Fassung")


async def _edit_article_with_an_earlier_clock(sessions, settings):
    """An edit stamped before the newest `updated_at`: a replica whose clock is behind, or
    a transaction that read the clock long before it committed (a slow ingest)."""
    async with sessions() as session, session.begin():
        articles = await store.newest_articles(session, 50)
        newest = max(articles, key=lambda a: a.updated_at)
        article = next(a for a in articles if a.id != newest.id)
        earlier = newest.updated_at - timedelta(milliseconds=1)
        assert store.edit_article(article, article.title, "zweite Fassung", article.topics, earlier)


async def _hide_article(sessions, settings):
    async with sessions() as session, session.begin():
        (article,) = await store.newest_articles(session, 1)
        assert store.set_hidden(article, hidden=True)


async def _add_article(sessions, settings):
    await add_article(sessions, "Ganz neu", "2024-06-01")


async def _add_municipality(sessions, settings):
    await _municipality(sessions, "Stadt Borna", "Irpin")


async def _remove_municipality(sessions, settings):
    async with sessions() as session, session.begin():
        await session.execute(delete(store.Subscriber).where(store.Subscriber.name == "Stadt Olk"))


async def _rename_partner(sessions, settings):
    async with sessions() as session, session.begin():
        subscriber = await store.subscriber_by_name(session, "Stadt Olk")
        assert subscriber is not None
        subscriber.partner = "Kyjiw"


async def _listing_heading(sessions, settings):
    async with sessions() as session, session.begin():
        await store.set_fact(session, store.LISTING_HEADING, "Neue Überschrift")


def _setting(**changes):
    async def change(sessions, settings):
        return settings.model_copy(update=changes)

    change.__name__ = "_".join(changes)
    return change


@pytest.mark.parametrize(
    "change",
    [
        _edit_article,
        _edit_article_with_an_earlier_clock,
        _hide_article,
        _add_article,
        _add_municipality,
        _remove_municipality,
        _rename_partner,
        _listing_heading,
        _setting(site_title="Partnerschaftsnachrichten"),
        _setting(feed_size=3),
        _setting(feed_author="Jemand anderes"),
        _setting(base_url="https://woanders.example.org"),
        _setting(websub_hub="https://hub.example.org/"),
    ],
    ids=lambda change: change.__name__.strip("_"),
)
async def test_every_input_a_feed_shows_makes_the_next_build_render(
    sessions, settings, engine, change: Change
):
    await import_demo(sessions)
    await _municipality(sessions, "Stadt Olk", "Leipzig")
    await _build(settings, engine, sessions)
    assert (await _build(settings, engine, sessions)).changed == []

    changed_settings = await change(sessions, settings) or settings
    report = await _build(changed_settings, engine, sessions)

    assert report.changed or report.removed


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


async def test_a_new_article_renders_only_the_feeds_it_is_in(sessions, settings, engine):
    await import_demo(sessions)
    await _municipality(sessions, "Stadt Borna", "Irpin")
    await _municipality(sessions, "Stadt Leipzig", "Kyjiw")
    await _build(settings, engine, sessions)

    await add_article(sessions, "Besuch aus Irpin in Borna", "2024-06-01", topics=["Besuch"])
    report = await _build(settings, engine, sessions)

    touched = {path.rsplit(".", 1)[0] for path in report.changed}
    assert touched == {"artikel", "themen/besuch", "kommunen/stadt-borna"}
    fresh = settings.model_copy(update={"feeds_dir": settings.feeds_dir.parent / "frisch"})
    async with sessions() as session, session.begin():
        await store.set_fact(session, feeds.FINGERPRINT_FACT, "{}")
    other_engine = store.create_engine(settings.database_url)
    try:
        await _build(fresh, other_engine, store.session_factory(other_engine))
    finally:
        await other_engine.dispose()
    assert _files(settings.feeds_dir) == _files(fresh.feeds_dir)


async def test_a_build_by_another_process_in_between_makes_this_one_render_all(
    sessions, settings, engine
):
    """The specs this process skips are the ones it built; when another process built the
    feeds since (the recorded fingerprint is not this process's), it renders every spec."""
    await import_demo(sessions)
    await _build(settings, engine, sessions)
    async with sessions() as session, session.begin():
        await store.set_fact(session, feeds.FINGERPRINT_FACT, '{"fingerprint": "elsewhere"}')
        # The other process published other bytes for one feed.
        await store.publish_feed_documents(session, {"artikel.atom": b"<feed/>"}, set(), ())
    (settings.feeds_dir / "artikel.atom").unlink()

    report = await _build(settings, engine, sessions)

    assert (settings.feeds_dir / "artikel.atom").exists()
    assert report.changed == ["artikel.atom"]


async def test_a_topic_older_than_the_newest_thousand_articles_keeps_its_feed(
    sessions, settings, engine
):
    """The build reads the newest 1,000 articles once; a topic feed that reaches further
    back gets its articles by a query of its own, each with all its topics."""
    older = [
        {"title": f"Alt {i}", "teaser": f"a{i}", "place": "Bonn", "published": "2020-01-01"}
        for i in range(2)
    ]
    for item in older:
        item["topics"] = ["Wiederaufbau", "Archiv"]
    newer = [
        {"title": f"Neu {i}", "teaser": f"n{i}", "place": "Bonn", "published": "2024-01-01"}
        for i in range(feeds.MUNICIPALITY_SCAN)
    ]
    await ingest.save(sessions, ingest.parse_json(json.dumps(older + newer)))

    await _build(settings, engine, sessions)

    archive = json.loads((settings.feeds_dir / "themen/archiv.json").read_text("utf-8"))
    assert sorted(item["title"] for item in archive["items"]) == ["Alt 0", "Alt 1"]
    assert [item["tags"] for item in archive["items"]] == [["Archiv", "Wiederaufbau"]] * 2

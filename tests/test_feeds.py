"""Feeds: what feedparser (a real feed reader's parser) makes of every generated file."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from service import feeds, ingest, store
from service.config import Settings
from service.errors import FeedsBaseUrlChangedError

from .helpers import BASE_URL, DEMO_ARTICLES, DEMO_TEXT, import_demo, postgres_only

FORMATS = [".xml", ".atom", ".json"]


async def _demo(sessions, settings: Settings, engine) -> feeds.BuildReport:
    await import_demo(sessions)
    report = await feeds.build_feeds(settings, engine, sessions)
    assert report is not None
    return report


def _parse(path: Path) -> feedparser.FeedParserDict:
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    parsed = feedparser.parse(path.read_bytes())
    assert not parsed.bozo, f"{path.name}: {parsed.get('bozo_exception')}"
    return parsed


@pytest.mark.parametrize("suffix", [".xml", ".atom"])
async def test_xml_feeds_are_valid_and_complete(sessions, settings, engine, suffix):
    await _demo(sessions, settings, engine)

    parsed = _parse(settings.feeds_dir / f"artikel{suffix}")

    assert parsed.version == ("rss20" if suffix == ".xml" else "atom10")
    assert parsed.feed.title == "Kommunalpartnerschaften mit der Ukraine"
    assert parsed.feed.language == "de"
    self_links = [link.href for link in parsed.feed.links if link.rel == "self"]
    assert self_links == [f"{BASE_URL}/feeds/artikel{suffix}"]
    assert parsed.feed.link == f"{BASE_URL}/"  # the website, for the reader's "visit site"
    assert len(parsed.entries) == 10
    assert [e.title for e in parsed.entries] == [title for title, _, _ in DEMO_ARTICLES]
    assert len({e.id for e in parsed.entries}) == 10
    for entry, (_, day, caption) in zip(parsed.entries, DEMO_ARTICLES, strict=True):
        assert entry.link.startswith(f"{BASE_URL}/artikel/")
        assert entry.id.startswith("urn:uuid:")
        published = datetime(*entry.published_parsed[:6], tzinfo=UTC)
        assert published.date() in {day, day.replace(day=day.day - 1)}  # midnight in Berlin
        assert entry.summary
        if suffix == ".atom":  # RSS 2.0 items have no updated date
            assert entry.updated_parsed is not None
        if caption:
            assert caption.replace('"', "&quot;") in entry.content[0].value


async def test_dates_are_berlin_midnight_of_the_listed_day(sessions, settings, engine):
    await _demo(sessions, settings, engine)
    document = _parse(settings.feeds_dir / "artikel.json")
    assert document["items"][0]["date_published"] == "2024-02-24T00:00:00+01:00"
    atom = (settings.feeds_dir / "artikel.atom").read_text(encoding="utf-8")
    assert "<published>2022-07-13T00:00:00+02:00</published>" in atom


async def test_json_feed_is_version_1_1_with_absolute_links(sessions, settings, engine):
    await _demo(sessions, settings, engine)

    document = _parse(settings.feeds_dir / "artikel.json")

    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert document["language"] == "de"
    assert document["feed_url"] == f"{BASE_URL}/feeds/artikel.json"
    assert document["home_page_url"] == f"{BASE_URL}/"
    assert len(document["items"]) == 10
    assert len({item["id"] for item in document["items"]}) == 10
    assert all(item["url"].startswith(f"{BASE_URL}/artikel/") for item in document["items"])
    assert document["items"][0]["title"] == DEMO_ARTICLES[0][0]


async def test_ids_are_stable_across_an_edit(sessions, settings, engine):
    await _demo(sessions, settings, engine)
    before = {
        s: [e.id for e in _parse(settings.feeds_dir / f"artikel{s}").entries]
        for s in (".xml", ".atom")
    }
    before_json = [i["id"] for i in _parse(settings.feeds_dir / "artikel.json")["items"]]

    edited = DEMO_TEXT.replace("Auf 62 Jahre", "Auf 63 Jahre").replace(
        "Ukraine: In Erwartung eines kalten Winters", "Ukraine: Vor einem kalten Winter"
    )
    await ingest.save(sessions, ingest.parse_listing_text(edited))
    report = await feeds.build_feeds(settings, engine, sessions)

    assert report is not None and len(report.written) == 3
    for suffix, ids in before.items():
        parsed = _parse(settings.feeds_dir / f"artikel{suffix}")
        assert [e.id for e in parsed.entries] == ids
        assert "Ukraine: Vor einem kalten Winter" in [e.title for e in parsed.entries]
    assert [i["id"] for i in _parse(settings.feeds_dir / "artikel.json")["items"]] == before_json


async def test_unchanged_feeds_are_not_rewritten(sessions, settings, engine):
    await _demo(sessions, settings, engine)
    stats = {s: os.stat(settings.feeds_dir / f"artikel{s}") for s in FORMATS}

    report = await feeds.build_feeds(settings, engine, sessions)

    assert report is not None and report.written == [] and report.unchanged == 3
    for suffix, before in stats.items():
        after = os.stat(settings.feeds_dir / f"artikel{suffix}")
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [p for p in settings.feeds_dir.iterdir() if p.name.startswith(".")]


async def test_control_characters_in_stored_text_are_dropped_not_fatal(sessions, settings, engine):
    data = store.ArticleData(
        key="raw",
        title="Steuer\x0bzeichen\x08 im Titel",
        teaser="Text mit \x1b Escape",
        place="Bonn",
        published_at=datetime(2024, 1, 2, tzinfo=UTC),
        image_caption="Bild\x07",
    )
    async with sessions() as session, session.begin():
        await store.save_article(session, data)

    report = await feeds.build_feeds(settings, engine, sessions)

    assert report is not None and len(report.written) == 3
    for suffix in (".xml", ".atom"):
        (entry,) = _parse(settings.feeds_dir / f"artikel{suffix}").entries
        assert entry.title == "Steuerzeichen im Titel"
    assert _parse(settings.feeds_dir / "artikel.json")["items"][0]["summary"] == "Text mit  Escape"


async def test_topic_feeds_are_built_and_pruned(sessions, settings, engine):
    payload = [
        {
            "title": "Energie eins",
            "teaser": "A",
            "place": "Bonn",
            "published": "2024-01-01",
            "topics": ["Energie", "Wärme & Wasser"],
        },
        {
            "title": "Energie zwei",
            "teaser": "B",
            "place": "Bonn",
            "published": "2024-01-02",
            "topics": ["Energie"],
        },
    ]
    await ingest.save(sessions, ingest.parse_json(json.dumps(payload)))
    await feeds.build_feeds(settings, engine, sessions)

    energy = _parse(settings.feeds_dir / "themen/energie.atom")
    assert [e.title for e in energy.entries] == ["Energie zwei", "Energie eins"]
    assert energy.feed.title.endswith("Thema: Energie")
    water = _parse(settings.feeds_dir / "themen/waerme-wasser.xml")
    assert [e.title for e in water.entries] == ["Energie eins"]
    assert [t.term for t in water.entries[0].tags] == ["Energie", "Wärme & Wasser"]

    payload[0]["topics"] = ["Energie"]
    await ingest.save(sessions, ingest.parse_json(json.dumps(payload)))
    report = await feeds.build_feeds(settings, engine, sessions)

    assert report is not None
    assert sorted(report.removed) == [
        "themen/waerme-wasser.atom",
        "themen/waerme-wasser.json",
        "themen/waerme-wasser.xml",
    ]
    assert not (settings.feeds_dir / "themen/waerme-wasser.xml").exists()


async def test_configured_site_title_wins_over_the_listing_heading(sessions, engine, settings):
    titled = settings.model_copy(update={"site_title": "Partnerschaftsnachrichten"})
    await import_demo(sessions)
    await feeds.build_feeds(titled, engine, sessions)
    assert _parse(titled.feeds_dir / "artikel.atom").feed.title == "Partnerschaftsnachrichten"


async def test_feed_size_limits_entries(sessions, engine, settings):
    small = settings.model_copy(update={"feed_size": 3})
    await import_demo(sessions)
    await feeds.build_feeds(small, engine, sessions)
    assert len(_parse(small.feeds_dir / "artikel.xml").entries) == 3


@postgres_only
async def test_second_replica_skips_the_build_while_the_first_holds_the_lock(
    sessions, settings, engine
):
    async with store.exclusive(engine, "feeds") as first:
        assert first is True
        assert await feeds.build_feeds(settings, engine, sessions) is None
    assert await feeds.build_feeds(settings, engine, sessions) is not None


async def test_each_subscribed_municipality_gets_a_feed_of_its_news(sessions, settings, engine):
    await import_demo(sessions)
    async with sessions() as session, session.begin():
        for name, partner in [
            ("Stadt Borna", "Irpin"),
            ("Stadt Leipzig", "Kyjiw"),
            ("Gemeinde Nirgendwo", None),
        ]:
            await store.create_subscriber(
                session, name=name, partner=partner, frequency=store.Frequency.WEEKLY
            )
    await feeds.build_feeds(settings, engine, sessions)

    borna = _parse(settings.feeds_dir / "kommunen/stadt-borna.atom")
    leipzig = _parse(settings.feeds_dir / "kommunen/stadt-leipzig.xml")
    nowhere = _parse(settings.feeds_dir / "kommunen/gemeinde-nirgendwo.atom")

    assert [e.title for e in borna.entries] == [
        "„Wir holen die Menschen mit dem Auto von der Grenze ab“"
    ]
    assert borna.feed.title.endswith("Stadt Borna")
    leipzig_titles = [e.title for e in leipzig.entries]
    assert "Leipzig – Kyjiw: Eine dynamische Partnerschaft in bewegten Zeiten" in leipzig_titles
    assert "„Wir holen die Menschen mit dem Auto von der Grenze ab“" not in leipzig_titles
    assert nowhere.entries == []

    async with sessions() as session, session.begin():
        await store.remove_subscriber(
            session, await store.subscriber_by_name(session, "Stadt Borna")
        )
    report = await feeds.build_feeds(settings, engine, sessions)
    assert report is not None
    assert not (settings.feeds_dir / "kommunen/stadt-borna.atom").exists()


async def test_ukrainian_topics_and_a_flag_get_feeds_of_their_own(sessions, settings, engine):
    def article(title: str, topics: list[str]) -> dict[str, object]:
        return {
            "title": title,
            "teaser": title,
            "place": "Bonn",
            "published": "2024-01-01",
            "topics": topics,
        }

    payload = [
        article("Über die Ukraine", ["Україна"]),
        article("Über Kyjiw", ["Київ"]),
        article("Mit Flagge", ["🇺🇦"]),
        article("Kyjiw auf Lateinisch", ["Kyiv"]),
    ]
    await ingest.save(sessions, ingest.parse_json(json.dumps(payload)))
    await feeds.build_feeds(settings, engine, sessions)
    async with sessions() as session:
        slugs = await store.topic_slugs(session)

    assert slugs["Україна"] == "ukraina" and slugs["Київ"] == "kyiv"
    assert slugs["🇺🇦"].startswith("thema-") and slugs["Kyiv"].startswith("kyiv-")
    for topic, slug in slugs.items():
        parsed = _parse(settings.feeds_dir / f"themen/{slug}.atom")
        assert parsed.feed.title.endswith(f"Thema: {topic}")
        assert [e.title for e in parsed.entries] == [
            a["title"] for a in payload if a["topics"] == [topic]
        ]
    assert not (settings.feeds_dir / "themen/artikel.atom").exists()


async def test_articles_titled_only_in_emoji_on_one_day_stay_apart(sessions):
    payload = [
        {"title": title, "teaser": title, "place": "Bonn", "published": "2024-01-01"}
        for title in ("🇺🇦", "🇺🇦❤️🇩🇪")
    ]

    report = await ingest.save(sessions, ingest.parse_json(json.dumps(payload)))

    assert (report.created, report.duplicates) == (2, [])
    async with sessions() as session:
        assert sorted(a.slug for a in await store.newest_articles(session, 10)) == [
            "artikel",
            "artikel-2",
        ]


async def test_a_listing_heading_of_control_characters_does_not_break_the_feeds(
    sessions, settings, engine
):
    listing = "\x01\x02\n\nBild\n\nTitel\n\nBonn, 1. März 2024. Text.\n"
    await ingest.save(sessions, ingest.parse_listing_text(listing))

    await feeds.build_feeds(settings, engine, sessions)

    assert _parse(settings.feeds_dir / "artikel.atom").feed.title == feeds.DEFAULT_TITLE


async def test_atom_feeds_name_an_author_for_their_entries(sessions, settings, engine):
    """RFC 4287 4.1.1: an entry without atom:author needs one on its feed."""
    await _demo(sessions, settings, engine)
    for path in settings.feeds_dir.rglob("*.atom"):
        root = etree.fromstring(path.read_bytes())
        ns = {"a": "http://www.w3.org/2005/Atom"}
        entries = root.findall("a:entry", ns)
        assert entries
        assert root.findtext("a:author/a:name", namespaces=ns) == settings.feed_author
        assert all(e.find("a:author", ns) is None for e in entries)
    document = json.loads((settings.feeds_dir / "artikel.json").read_text(encoding="utf-8"))
    assert document["authors"] == [{"name": settings.feed_author}]


async def test_feeds_record_their_base_url_and_refuse_another_without_force(
    sessions, settings, engine
):
    await _demo(sessions, settings, engine)
    moved = settings.model_copy(update={"base_url": None, "port": 8300})
    with pytest.raises(FeedsBaseUrlChangedError) as error:
        await feeds.build_feeds(moved, engine, sessions)
    assert (error.value.recorded, error.value.current) == (BASE_URL, "http://127.0.0.1:8300")
    assert BASE_URL in (settings.feeds_dir / "artikel.atom").read_text()
    await feeds.build_feeds(moved, engine, sessions, force=True)
    assert "http://127.0.0.1:8300/artikel/" in (settings.feeds_dir / "artikel.atom").read_text()
    await feeds.build_feeds(moved, engine, sessions)  # now recorded: no refusal

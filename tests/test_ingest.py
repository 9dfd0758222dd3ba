"""Ingest: the demo listing, its variants (HTML, JSON, NDJSON), edits and bad input."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import feeds, ingest, store
from service.errors import IngestInputError

from .helpers import BERLIN, DEMO_ARTICLES, DEMO_TEXT, import_demo


async def _import(sessions: async_sessionmaker[AsyncSession], text: str) -> ingest.IngestReport:
    return await ingest.save(sessions, ingest.parse_listing_text(text))


async def _all(sessions: async_sessionmaker[AsyncSession]) -> list[store.Article]:
    async with sessions() as session:
        return list(await store.newest_articles(session, 1000))


async def test_demo_listing_imports_all_ten_articles_exactly(sessions):
    report = await import_demo(sessions)

    assert (report.created, report.updated, report.rejections) == (10, 0, [])
    articles = await _all(sessions)
    found = [(a.title, a.published_at.astimezone(BERLIN).date(), a.image_caption) for a in articles]
    assert found == DEMO_ARTICLES
    assert {a.place for a in articles} == {"Bonn"}
    assert all(a.published_at.tzinfo is not None for a in articles)


async def test_demo_preamble_is_no_article_but_the_feed_heading(sessions):
    report = await import_demo(sessions)

    titles = {a.title for a in await _all(sessions)}
    assert "Hauptnavigation" not in titles
    assert "Kommunalpartnerschaften mit der Ukraine" not in titles
    assert report.heading == "Kommunalpartnerschaften mit der Ukraine"
    async with sessions() as session:
        assert await store.get_fact(session, store.LISTING_HEADING) == report.heading


async def test_reimport_of_the_same_listing_changes_nothing(sessions):
    await import_demo(sessions)
    before = {(a.id, a.guid, a.slug, a.updated_at) for a in await _all(sessions)}

    report = await import_demo(sessions)

    assert (report.created, report.updated, report.unchanged) == (0, 0, 10)
    assert {(a.id, a.guid, a.slug, a.updated_at) for a in await _all(sessions)} == before


async def test_teaser_typo_fix_updates_the_article_instead_of_adding_one(sessions):
    await import_demo(sessions)
    (original,) = [a for a in await _all(sessions) if a.title.startswith("Leipzig – Kyjiw")]

    fixed = DEMO_TEXT.replace("Auf 62 Jahre", "Auf 63 Jahre")
    assert fixed != DEMO_TEXT
    report = await _import(sessions, fixed)

    assert (report.created, report.updated, report.unchanged) == (0, 1, 9)
    (edited,) = [a for a in await _all(sessions) if a.title.startswith("Leipzig – Kyjiw")]
    assert "Auf 63 Jahre" in edited.teaser
    assert (edited.id, edited.guid, edited.slug) == (original.id, original.guid, original.slug)
    assert edited.updated_at > original.updated_at
    assert edited.created_at == original.created_at


async def test_title_typo_fix_updates_the_article_and_keeps_its_slug(sessions):
    await import_demo(sessions)
    old_title = "Ukraine: In Erwartung eines kalten Winters"
    (original,) = [a for a in await _all(sessions) if a.title == old_title]

    report = await _import(
        sessions, DEMO_TEXT.replace(old_title, "Ukraine: Vor einem kalten Winter")
    )

    assert (report.created, report.updated) == (0, 1)
    articles = await _all(sessions)
    assert len(articles) == 10
    (edited,) = [a for a in articles if a.id == original.id]
    assert edited.title == "Ukraine: Vor einem kalten Winter"
    assert (edited.slug, edited.guid, edited.key) == (original.slug, original.guid, original.key)


async def test_german_typography_survives_byte_for_byte(sessions):
    await import_demo(sessions)
    articles = {a.title: a for a in await _all(sessions)}

    for title in articles:
        assert title.encode("utf-8") in DEMO_TEXT.encode("utf-8")
    winter = articles["Ukraine: In Erwartung eines kalten Winters"]
    assert "deutschen Partner*innen daher besonders wertvoll" in winter.teaser
    assert "„Wir holen die Menschen mit dem Auto von der Grenze ab“" in articles
    teaser = articles[
        "Zwei Jahre nach Kriegsbeginn: Deutsche und ukrainische Kommunen stehen Seite an Seite"
    ].teaser
    assert teaser.startswith("Die russische Invasion in die Ukraine jährt sich")
    assert "ungebrochen – und muss" in teaser


def test_teaser_loses_its_date_line_which_becomes_place_and_date():
    parsed = ingest.parse_listing_text(DEMO_TEXT)
    first = parsed.articles[0][1]
    assert first.place == "Bonn"
    assert first.published == date(2024, 2, 24)
    assert not first.teaser.startswith("Bonn,")
    assert parsed.articles[0][0] == 7  # the title's line


# --- bad input ----------------------------------------------------------------------------


def _listing(*items: str) -> str:
    return "Hauptnavigation\n\nNachrichten\n\n" + "\n\n".join(items) + "\n"


GOOD_ONE = "Gutes Bild\n\nErster guter Artikel\n\nBonn, 3. März 2024. Ein guter Anreißer."
GOOD_TWO = "Zweiter guter Artikel\n\nLeipzig, 4. März 2024. Noch ein guter Anreißer."


async def test_control_character_rejects_that_item_and_keeps_the_others(sessions):
    bad = "Kaputter\x07 Titel\n\nBonn, 5. März 2024. Text."
    report = await _import(sessions, _listing(GOOD_ONE, bad, GOOD_TWO))

    assert report.created == 2
    (rejection,) = report.rejections
    assert rejection.line == 11
    assert "U+0007" in rejection.reason and "title" in rejection.reason
    assert {a.title for a in await _all(sessions)} == {
        "Erster guter Artikel",
        "Zweiter guter Artikel",
    }


async def test_item_without_date_line_is_reported_with_its_lines(sessions):
    long_teaser = "Bonn. Hier fehlt das Datum. " + "Viel Text. " * 30
    missing = f"Bild ohne Datum\n\nArtikel ohne Datum\n\n{long_teaser}"
    report = await _import(sessions, _listing(GOOD_ONE, missing, GOOD_TWO))

    assert report.created == 2
    (rejection,) = report.rejections
    assert rejection.line == 11
    assert "no article" in rejection.reason and "date line" in rejection.reason
    assert "from line 11 to 15" in rejection.reason


async def test_unknown_month_is_named(sessions):
    bad = "Falscher Monat\n\nBonn, 5. Brumaire 2024. Text."
    report = await _import(sessions, _listing(GOOD_ONE, bad))

    assert report.created == 1
    (rejection,) = report.rejections
    assert "unknown month 'Brumaire'" in rejection.reason
    assert rejection.line == 13 and "Falscher Monat" in rejection.item  # the date line


def test_impossible_date_is_rejected():
    parsed = ingest.parse_listing_text(_listing("Titel\n\nBonn, 31. Februar 2024. Text."))
    assert parsed.articles == []
    assert "31. Februar 2024" in parsed.rejections[0].reason


async def test_ten_megabyte_teaser_is_rejected_quickly_and_others_kept(sessions):
    huge = "Riesig\n\nBonn, 5. März 2024. " + "x" * 10_000_000
    report = await _import(sessions, _listing(GOOD_ONE, huge, GOOD_TWO))

    assert report.created == 2
    (rejection,) = report.rejections
    assert "teaser" in rejection.reason and "5000 characters" in rejection.reason


async def test_failed_import_loses_nothing_already_stored(sessions):
    await import_demo(sessions)
    report = await _import(sessions, _listing("Titel\n\nBonn, 5. Brumaire 2024. Text."))
    assert (report.created, len(report.rejections)) == (0, 1)
    assert len(await _all(sessions)) == 10


def test_invalid_json_is_an_input_error_with_position():
    with pytest.raises(IngestInputError, match=r"invalid JSON at line 3, column \d+"):
        ingest.parse_json('[\n {"title": "a",\n  "teaser": }\n]')


async def test_ndjson_bad_line_is_rejected_and_good_lines_kept(sessions):
    good = {"title": "Aus NDJSON", "teaser": "Text", "place": "Bonn", "published": "2024-05-01"}
    text = (
        json.dumps(good)
        + "\n{broken\n"
        + json.dumps({**good, "title": "Zweiter", "teaser": "Anders"})
        + "\n"
    )
    parsed = ingest.parse(text, ingest.detect_format(text))
    report = await ingest.save(sessions, parsed)

    assert report.created == 2
    (rejection,) = report.rejections
    assert rejection.line == 2 and "invalid JSON" in rejection.reason


async def test_json_articles_with_topics_and_times(sessions):
    payload = {
        "articles": [
            {
                "title": "Mit Themen",
                "teaser": "Text",
                "place": "Kyjiw",
                "published": "2024-06-01T09:30:00",
                "topics": ["Wiederaufbau", "Energie", "Wiederaufbau"],
                "source_url": "https://example.org/a/1",
                "body": "<p onclick='x()'>Body<script>alert(1)</script></p>",
            },
            {"title": "Ohne Ort", "teaser": "Text", "published": "2024-06-01"},
        ]
    }
    report = await ingest.save(sessions, ingest.parse_json(json.dumps(payload)))

    assert report.created == 1
    assert "place: Field required" in report.rejections[0].reason
    (article,) = await _all(sessions)
    assert article.topics == ["Energie", "Wiederaufbau"]
    assert article.key == "https://example.org/a/1"
    assert article.published_at == datetime(2024, 6, 1, 9, 30, tzinfo=BERLIN)
    assert article.body == "<p>Body</p>"


HTML_LISTING = """<!doctype html>
<html><head><title>x</title></head><body>
<nav><ul><li>Hauptnavigation</li><li>Start</li></ul></nav>
<h1>Kommunalpartnerschaften mit der Ukraine</h1>
<div class="teaser">
  <img src="/bilder/krankenwagen.jpg" alt="Ein ausrangierter Krankenwagen steht vor der Halle.">
  <h2><a href="/aktuelles/zwei-jahre">Zwei Jahre nach Kriegsbeginn</a></h2>
  <p>Bonn, 24. Februar 2024. Die russische Invasion – ein Jahr „später“.</p>
</div>
<div class="teaser">
  <h2><a href="https://other.example/b">Ohne Bild</a></h2>
  <p>Bonn, 11. März 2022. Noch ein Anreißer.</p>
</div>
<footer><p>Impressum</p></footer>
</body></html>
"""


async def test_html_listing_gives_links_images_and_heading(sessions):
    parsed = ingest.parse_listing_html(HTML_LISTING, "https://skew.example/liste")
    report = await ingest.save(sessions, parsed)

    assert report.rejections == [] and report.created == 2
    assert report.heading == "Kommunalpartnerschaften mit der Ukraine"
    first, second = await _all(sessions)
    assert first.title == "Zwei Jahre nach Kriegsbeginn"
    assert first.source_url == "https://skew.example/aktuelles/zwei-jahre"
    assert first.image_url == "https://skew.example/bilder/krankenwagen.jpg"
    assert first.image_caption == "Ein ausrangierter Krankenwagen steht vor der Halle."
    assert first.teaser == "Die russische Invasion – ein Jahr „später“."
    assert second.image_caption is None and second.source_url == "https://other.example/b"


def test_format_detection():
    assert ingest.detect_format(DEMO_TEXT) == "text"
    assert ingest.detect_format(HTML_LISTING) == "html"
    assert ingest.detect_format('[{"a": 1}]') == "json"
    assert ingest.detect_format("{}", "x.ndjson") == "ndjson"
    with pytest.raises(IngestInputError, match="unknown format 'yaml'"):
        ingest.check_format("yaml")


def test_undecodable_input_names_the_offset():
    with pytest.raises(IngestInputError, match=r"not UTF-8 .*offset 3"):
        ingest.decode(b"abc\xff", "file.txt")


async def test_stored_articles_keep_their_stable_key(sessions):
    await import_demo(sessions)
    async with sessions() as session:
        keys = set(await session.scalars(select(store.Article.key)))
    assert "2023-11-09/leipzig-kyjiw-eine-dynamische-partnerschaft-in-bewegten-zeiten" in keys


async def test_listing_whose_every_item_is_rejected_keeps_the_site_title(sessions, settings):
    await import_demo(sessions)
    broken_page = (
        "Eine ganz andere Seite\n\nBildunterschrift\n\n"
        "Titel eins\n\nBonn, 1. Mürz 2024. Monat falsch.\n\n"
        "Titel zwei\n\nBonn, 31. Februar 2024. Tag falsch.\n"
    )

    report = await _import(sessions, broken_page)

    assert report.heading == "Eine ganz andere Seite"
    assert report.created == 0 and len(report.rejections) == 2
    async with sessions() as session:
        assert await store.get_fact(session, store.LISTING_HEADING) == (
            "Kommunalpartnerschaften mit der Ukraine"
        )
        assert await feeds.site_title(settings, session) == (
            "Kommunalpartnerschaften mit der Ukraine"
        )


async def test_two_items_with_one_key_import_the_last_and_report_both_lines(sessions):
    item = {"key": "leipzig-1", "teaser": "Text", "place": "Leipzig", "published": "2024-05-01"}
    text = "\n".join(
        json.dumps(line)
        for line in (
            {**item, "title": "Erste Fassung"},
            {**item, "key": "borna-1", "title": "Andere Meldung", "place": "Borna"},
            {**item, "title": "Zweite Fassung"},
            {**item, "title": "Dritte Fassung"},
        )
    )

    report = await ingest.save(sessions, ingest.parse_ndjson(text))

    assert (report.created, report.updated) == (2, 0)
    assert [str(d) for d in report.duplicates] == [
        "line 3: same key 'leipzig-1' as line 1; line 3 is imported, line 1 is not",
        "line 4: same key 'leipzig-1' as line 3; line 4 is imported, line 3 is not",
    ]
    assert sorted(a.title for a in await _all(sessions)) == ["Andere Meldung", "Dritte Fassung"]


async def test_json_with_a_lone_surrogate_rejects_that_item_and_keeps_the_others(sessions):
    text = json.dumps(
        [
            {"title": "Gut", "teaser": "Text", "place": "Bonn", "published": "2024-05-01"},
            {"title": "Schlecht \ud800", "teaser": "T", "place": "Bonn", "published": "2024-05-01"},
        ]
    )

    report = await ingest.save(sessions, ingest.parse_json(text))

    assert report.created == 1
    (rejection,) = report.rejections
    assert rejection.line == 2 and rejection.reason.startswith("title: ")

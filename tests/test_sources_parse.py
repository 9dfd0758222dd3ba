"""Reading fetched bodies: format detection, entries of RSS, Atom and JSON Feed as
articles, stable keys, dates, sanitised absolute HTML, and rejected entries."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from service.clock import BERLIN
from service.errors import IngestInputError
from service.sources.parse import detect, parse_date, parse_source, stable_key

from .feedserver import item, rss

FEED = "https://example.org/presse/feed.xml"


def _parse(body: str | bytes, content_type: str | None = "application/rss+xml", fmt="auto"):
    data = body.encode() if isinstance(body, str) else body
    return parse_source(data, content_type, fmt, FEED, place="Leipzig")


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/rss+xml", "<rss/>", "rss"),
        ("application/atom+xml; charset=utf-8", "<feed/>", "atom"),
        ("application/feed+json", "{}", "jsonfeed"),
        ("application/x-ndjson", "{}", "ndjson"),
        ("text/xml", '<?xml version="1.0"?>\n<!-- hi --><rss version="2.0"/>', "rss"),
        ("application/xml", "<feed xmlns='http://www.w3.org/2005/Atom'/>", "atom"),
        ("application/xml", "<rdf:RDF/>", "rss"),
        ("text/html; charset=utf-8", "<!DOCTYPE html><html></html>", "html"),
        ("application/json", '{"version": "https://jsonfeed.org/version/1.1"}', "jsonfeed"),
        ("application/json", '[{"title": "x"}]', "json"),
        (None, "Leipzig, 1. März 2024. Text", "text"),
    ],
)
def test_format_is_detected_from_content_type_and_content(content_type, body, expected):
    assert detect(body.encode(), content_type) == expected


def test_rss_entries_become_articles_with_berlin_dates_and_the_source_place():
    result = _parse(
        rss(
            item("Delegation aus Lwiw", guid="urn:x:1", date="Mon, 04 Mar 2024 10:00:00 +0100"),
            item("Ohne Zone", guid="urn:x:2", date="Tue, 05 Mar 2024 09:30:00"),
        )
    )
    (_, first), (_, second) = result.parsed.articles

    assert result.format == "rss" and result.parsed.rejections == []
    assert first.key == "urn:x:1" and first.place == "Leipzig"
    assert first.published_at() == datetime(2024, 3, 4, 9, 0, tzinfo=UTC)
    assert second.published_at() == datetime(2024, 3, 5, 9, 30, tzinfo=BERLIN)


def test_entries_without_title_or_date_are_rejected_with_the_reason():
    result = _parse(
        rss(
            "<item><guid>urn:a</guid><pubDate>Mon, 04 Mar 2024 10:00:00 +0100</pubDate></item>",
            "<item><title>Kein Datum</title><guid>urn:b</guid></item>",
            "<item><title>Unlesbar</title><pubDate>bald</pubDate></item>",
            item("Gut", guid="urn:c"),
        )
    )

    reasons = [(r.line, r.reason) for r in result.parsed.rejections]
    assert reasons == [
        (1, "the entry has no title"),
        (2, "the entry has no date"),
        (3, "the entry has unreadable date 'bald'"),
    ]
    assert [a.title for _, a in result.parsed.articles] == ["Gut"]


def test_placeholder_and_far_future_dates_are_rejected_as_implausible():
    result = _parse(
        rss(
            item("Platzhalter", guid="urn:a", date="0001-01-01T00:00:00Z"),
            item("Zukunft", guid="urn:b", date="Mon, 04 Mar 2030 10:00:00 +0100"),
            item("Gut", guid="urn:c"),
        )
    )

    reasons = [(r.line, r.reason) for r in result.parsed.rejections]
    assert reasons == [
        (1, "the entry has an implausible date '0001-01-01T00:00:00Z'"),
        (2, "the entry has an implausible date 'Mon, 04 Mar 2030 10:00:00 +0100'"),
    ]
    assert [a.title for _, a in result.parsed.articles] == ["Gut"]


def test_an_id_repeated_within_a_feed_keeps_its_first_entry_and_says_so():
    result = _parse(rss(item("Erste", guid="urn:a"), item("Zweite", guid="urn:a")))

    assert [a.title for _, a in result.parsed.articles] == ["Erste"]
    assert [(r.line, r.reason) for r in result.parsed.rejections] == [
        (2, "the entry repeats the id of entry 1")
    ]


def test_keys_are_the_id_else_the_link_else_a_hash():
    assert stable_key("tag:x,2024:1", "https://x/1", "T", "d", FEED) == "tag:x,2024:1"
    assert stable_key("17", None, "T", "d", FEED) == f"{FEED}#17"
    assert stable_key(None, "https://x/1", "T", "d", FEED) == "https://x/1"
    hashed = stable_key(None, None, "T", "d", FEED)
    assert hashed.startswith("sha256:") and hashed == stable_key(None, None, "T", "d", FEED)
    assert hashed != stable_key(None, None, "T", "e", FEED)


def test_entry_html_is_sanitised_and_its_links_made_absolute():
    content = (
        '&lt;p onclick="x()"&gt;Mehr &lt;a href="/presse/1"&gt;hier&lt;/a&gt;'
        '&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src="bild.jpg"&gt;&lt;/p&gt;'
    )
    atom = (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<title>t</title><id>urn:f</id><updated>2024-03-04T10:00:00Z</updated>"
        '<entry><title>A</title><id>urn:e</id><link href="/presse/1"/>'
        "<updated>2024-03-04T10:00:00</updated>"
        f'<content type="html">{content}</content></entry></feed>'
    )
    ((_, article),) = _parse(atom, "application/atom+xml").parsed.articles

    assert article.body is not None
    assert 'href="https://example.org/presse/1"' in article.body
    assert 'src="https://example.org/presse/bild.jpg"' in article.body
    assert "script" not in article.body and "onclick" not in article.body
    assert article.source_url == "https://example.org/presse/1"
    assert article.teaser == "Mehr hier"
    assert article.published_at() == datetime(2024, 3, 4, 10, 0, tzinfo=BERLIN)


def test_latin1_declared_as_utf8_is_read_with_a_note():
    body = rss(item("Grüße aus Dnipro", guid="urn:g")).encode("latin-1")
    result = _parse(body, "application/rss+xml; charset=utf-8")

    assert [a.title for _, a in result.parsed.articles] == ["Grüße aus Dnipro"]
    assert any("windows-1252" in note for note in result.notes)


def test_invalid_xml_fails_as_a_whole():
    with pytest.raises(IngestInputError, match="invalid XML"):
        _parse("<rss><channel><item><title>Kaputt</ti", "application/rss+xml")


def test_json_feed_is_read_by_its_spec():
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Presse",
        "items": [
            {
                "id": "42",
                "url": "https://example.org/presse/42",
                "title": "Hilfsgüter für Charkiw",
                "content_html": '<p>Ein <a href="/x">Link</a></p>',
                "summary": "Zusammenfassung",
                "date_published": "2024-03-04T10:00:00+01:00",
                "image": "https://example.org/bild.jpg",
            },
            {"id": "43", "title": "Ohne Datum", "content_text": "Text"},
            # The spec's strings of another type count as missing, not as their repr.
            {"id": "44", "title": ["Liste"], "date_published": "2024-03-04T10:00:00Z"},
            {"id": "45", "title": "Zahl als Datum", "date_published": 20240304},
        ],
    }
    result = _parse(json.dumps(document), "application/feed+json")
    ((_, article),) = result.parsed.articles

    assert result.format == "jsonfeed"
    assert article.key == f"{FEED}#42"
    assert article.teaser == "Zusammenfassung"
    assert 'href="https://example.org/x"' in (article.body or "")
    assert article.image_url == "https://example.org/bild.jpg"
    assert [r.reason for r in result.parsed.rejections] == [
        "the entry has no date",
        "the entry has no title",
        "the entry has no date",
    ]


def test_a_json_document_that_is_no_json_feed_is_refused_as_one():
    with pytest.raises(IngestInputError, match="not a JSON Feed"):
        _parse('{"version": "1", "items": []}', "application/feed+json")


def test_listing_json_goes_through_ingest():
    raw = [{"title": "T", "teaser": "X", "place": "Borna", "published": "2024-03-04"}]
    result = _parse(json.dumps(raw), "application/json")

    assert result.format == "json"
    assert [a.place for _, a in result.parsed.articles] == ["Borna"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mon, 04 Mar 2024 10:00:00 GMT", datetime(2024, 3, 4, 10, 0, tzinfo=UTC)),
        ("2024-03-04T10:00:00Z", datetime(2024, 3, 4, 10, 0, tzinfo=UTC)),
        ("2024-03-04T10:00:00", datetime(2024, 3, 4, 10, 0, tzinfo=BERLIN)),
        ("2024-03-04", datetime(2024, 3, 4, tzinfo=BERLIN)),
        ("gestern", None),
        ("", None),
    ],
)
def test_dates_without_a_zone_are_berlin_time(text, expected):
    assert parse_date(text) == expected

"""Feed fragments: each article's entry rendered once per format, and feeds assembled from
those fragments, byte for byte what feedgen's pretty-printed RSS/Atom (and `json.dumps` with
`indent=2`) would write.

feedgen builds an lxml tree per feed and serializes it: rendering the same article into the
main feed, its topic feeds and its municipalities' feeds costs the tree every time. Here an
entry's text is made once and feeds are joined from it, so a build costs one entry per article
and format plus string joins. The serialization rules copied from lxml and feedgen are few
and exact (escaping, indentation, which elements an empty value drops); each value is cleaned
and escaped once for the formats that share it, and JSON strings are escaped by orjson, whose
bytes are `json.dumps`'. `tests/test_feed_fragments.py` holds them to feedgen's own output, and
`render` keeps the feedgen renderers as that reference. Imports `clock`, `config` and
`feeds.render`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

import orjson

from service.clock import BERLIN
from service.config import Settings
from service.feeds.render import (
    DEFAULT_TITLE,
    EPOCH,
    FeedItem,
    FeedSpec,
    article_url,
    content_html,
    feed_url,
    xml_safe,
)

# A string as JSON: what `json.dumps(..., ensure_ascii=False)` writes, as UTF-8.
_json = orjson.dumps
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _text(value: str) -> str:
    """Escape element text as lxml serializes it."""
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("\r", "&#13;") if "\r" in value else value


def _attr(value: str) -> str:
    """Escape an attribute value as lxml serializes it."""
    return _quoted(_text(value))


def _quoted(text: str) -> str:
    """An attribute value from its text escape (`_text`): what an attribute escapes more."""
    return text.replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def _rfc2822(moment: datetime, iso: str | None = None) -> str:
    """feedgen's RSS date (strftime in the C locale), without touching the process locale;
    `iso` is `moment.isoformat()`, when the caller has it."""
    iso = iso or moment.isoformat()
    if iso[-3] == ":" and iso[-6] in "+-":  # an offset of whole minutes: "...T13:05:00+01:00"
        offset = f"{iso[-6:-3]}{iso[-2:]}"
    else:  # an offset with seconds (local mean time before 1893), or none
        delta = moment.utcoffset()
        minutes = int(delta.total_seconds()) // 60 if delta is not None else 0
        sign, minutes = ("-", -minutes) if minutes < 0 else ("+", minutes)
        offset = f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    return (
        f"{_DAYS[moment.weekday()]}, {iso[8:10]} {_MONTHS[moment.month - 1]} {iso[:4]} "
        f"{iso[11:19]} {offset}"
    )


class Entry(NamedTuple):
    """One article's entry in each format, encoded once for every feed it is in, and the date
    its feed's `updated` is taken from."""

    rss: bytes
    atom: bytes
    json: bytes
    updated_at: datetime


# An entry's publication and edit dates in Berlin time, ISO 8601.
Dates = tuple[str, str]


def _rss_item(
    title: str, url: str, teaser: str, content: str, guid: str, topics: list[str], date: str
) -> str:
    """The RSS item of escaped values (`teaser` empty when the article has none)."""
    if teaser:
        text = (
            f"      <description>{teaser}</description>\n"
            f"      <content:encoded>{content}</content:encoded>\n"
        )
    else:  # feedgen: no description, so the content takes its place
        text = f"      <description>{content}</description>\n"
    categories = "".join(f"      <category>{t}</category>\n" for t in topics)
    return (
        f"    <item>\n      <title>{title}</title>\n      <link>{url}</link>\n{text}"
        f'      <guid isPermaLink="false">{guid}</guid>\n{categories}'
        f"      <pubDate>{date}</pubDate>\n    </item>\n"
    )


def _atom_entry(
    title: str, url: str, teaser: str, content: str, guid: str, topics: Iterable[str], dates: Dates
) -> str:
    """The Atom entry of escaped values; `url` and `topics` escaped as attributes."""
    summary = f"    <summary>{teaser}</summary>\n" if teaser else "    <summary/>\n"
    categories = "".join(f'    <category term="{t}"/>\n' for t in topics)
    return (
        f"  <entry>\n    <id>{guid}</id>\n    <title>{title}</title>\n"
        f"    <updated>{dates[1]}</updated>\n"
        f'    <content type="html">{content}</content>\n'
        f'    <link href="{url}"/>\n{summary}{categories}'
        f"    <published>{dates[0]}</published>\n  </entry>\n"
    )


def _json_item(
    item: FeedItem, url: str, title: str, teaser: str, content: str, dates: Dates
) -> bytes:
    """The JSON Feed item, as `json.dumps(..., ensure_ascii=False, indent=2)` writes it
    inside the feed's `items`: orjson escapes a string to the same bytes, ten times faster."""
    lines = [
        b'      "id": ' + _json(item.guid),
        b'      "url": ' + _json(url),
        b'      "title": ' + _json(title),
        b'      "summary": ' + _json(teaser),
        b'      "content_html": ' + _json(content),
        # isoformat: nothing to escape
        f'      "date_published": "{dates[0]}",\n      "date_modified": "{dates[1]}"'.encode(),
    ]
    if item.source_url:
        lines.append(b'      "external_url": ' + _json(item.source_url))
    if item.image_url:
        lines.append(b'      "image": ' + _json(item.image_url))
    if item.topics:
        tags = b",\n".join(b"        " + _json(t) for t in item.topics)
        lines.append(b'      "tags": [\n' + tags + b"\n      ]")
    return b"    {\n" + b",\n".join(lines) + b"\n    }"


def entry(settings: Settings, item: FeedItem, articles_url: str | None = None) -> Entry:
    """An article's entry in RSS, Atom and JSON Feed; `articles_url` is
    `settings.link("artikel/")`, when the caller has it. Each value is cleaned and escaped
    once for the formats that share it."""
    title = xml_safe(item.title)
    if not title:
        raise ValueError("Required fields not set")  # what feedgen raises for an empty title
    url = f"{articles_url}{item.slug}" if articles_url else article_url(settings, item)
    teaser = xml_safe(item.teaser)
    content = content_html(settings, item, url)
    published = item.published_at.astimezone(BERLIN)
    dates = (published.isoformat(), item.updated_at.astimezone(BERLIN).isoformat())
    x_title, x_url, x_content, x_guid = _text(title), _text(url), _text(content), _text(item.guid)
    x_teaser = _text(teaser) if teaser else ""
    x_topics = [_text(xml_safe(t)) for t in item.topics]
    date = _rfc2822(published, dates[0])
    rss = _rss_item(x_title, x_url, x_teaser, x_content, x_guid, x_topics, date)
    atom = _atom_entry(
        x_title, _quoted(x_url), x_teaser, x_content, x_guid, map(_quoted, x_topics), dates
    )
    json_item = _json_item(item, url, title, teaser, content, dates)
    return Entry(rss.encode(), atom.encode(), json_item, item.updated_at)


class Entries:
    """The entries of one build, each rendered the first time a feed needs it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._articles_url = settings.link("artikel/")
        self._made: dict[int, Entry] = {}

    def of(self, items: Iterable[FeedItem]) -> list[Entry]:
        made = self._made
        found = []
        for item in items:
            cached = made.get(item.id)
            if cached is None:
                cached = made[item.id] = entry(self._settings, item, self._articles_url)
            found.append(cached)
        return found


def _head_texts(spec: FeedSpec) -> tuple[str, str]:
    return xml_safe(spec.title) or DEFAULT_TITLE, xml_safe(spec.description) or DEFAULT_TITLE


def assemble(
    settings: Settings, spec: FeedSpec, entries: Sequence[Entry], hub: str | None = None
) -> dict[str, bytes]:
    """The spec's three files (path below the feeds folder → bytes) from its entries."""
    title, description = _head_texts(spec)
    updated = max((e.updated_at for e in entries), default=EPOCH).astimezone(BERLIN)
    author = xml_safe(settings.feed_author)
    rss_self, atom_self = (feed_url(settings, spec.stem, s) for s in (".xml", ".atom"))
    rss_hub = f'    <atom:link href="{_attr(hub)}" rel="hub"/>\n' if hub else ""
    atom_hub = f'  <link href="{_attr(hub)}" rel="hub"/>\n' if hub else ""
    rss = (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<rss xmlns:atom="http://www.w3.org/2005/Atom" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" version="2.0">\n'
        "  <channel>\n"
        f"    <title>{_text(title)}</title>\n"
        f"    <link>{_text(spec.home_url)}</link>\n"
        f"    <description>{_text(description)}</description>\n"
        f'    <atom:link href="{_attr(rss_self)}" rel="self"/>\n'
        f"{rss_hub}"
        "    <docs>http://www.rssboard.org/rss-specification</docs>\n"
        "    <generator>partnerpost</generator>\n"
        "    <language>de</language>\n"
        f"    <lastBuildDate>{_rfc2822(updated)}</lastBuildDate>\n"
    )
    atom = (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="de">\n'
        f"  <id>{_text(atom_self)}</id>\n"
        f"  <title>{_text(title)}</title>\n"
        f"  <updated>{updated.isoformat()}</updated>\n"
        + (f"  <author>\n    <name>{_text(author)}</name>\n  </author>\n" if author else "")
        + f'  <link href="{_attr(atom_self)}" rel="self"/>\n'
        f"{atom_hub}"
        f'  <link href="{_attr(spec.home_url)}" rel="alternate" type="text/html"/>\n'
        "  <generator>partnerpost</generator>\n"
        f"  <subtitle>{_text(description)}</subtitle>\n"
    )
    return {
        f"{spec.stem}.xml": b"".join([rss.encode(), *(e.rss for e in entries), _RSS_END]),
        f"{spec.stem}.atom": b"".join([atom.encode(), *(e.atom for e in entries), _ATOM_END]),
        f"{spec.stem}.json": _json_feed(settings, spec, entries, hub),
    }


_RSS_END = b"  </channel>\n</rss>\n"
_ATOM_END = b"</feed>\n"


def _json_feed(
    settings: Settings, spec: FeedSpec, entries: Sequence[Entry], hub: str | None
) -> bytes:
    """The JSON Feed as `json.dumps(document, ensure_ascii=False, indent=2)` writes it."""
    title, description = _head_texts(spec)
    hubs = b""
    if hub:
        hubs = b'  "hubs": [\n    {\n      "type": "WebSub",\n      "url": %s\n    }\n  ],\n' % (
            _json(hub)
        )
    head = (
        b'{\n  "version": "https://jsonfeed.org/version/1.1",\n  "title": %s,\n'
        b'  "description": %s,\n  "home_page_url": %s,\n  "feed_url": %s,\n'
        b'  "language": "de",\n  "authors": [\n    {\n      "name": %s\n    }\n  ],\n'
        b'%s  "items": '
    ) % (
        _json(title),
        _json(description),
        _json(spec.home_url),
        _json(feed_url(settings, spec.stem, ".json")),
        _json(xml_safe(settings.feed_author)),
        hubs,
    )
    if not entries:
        return head + b"[]\n}\n"
    return b"".join([head, b"[\n", b",\n".join(e.json for e in entries), b"\n  ]\n}\n"])


def render_all(
    settings: Settings, specs: Sequence[FeedSpec], hub: str | None = None
) -> dict[str, bytes]:
    """Every format of each spec, keyed by its path below the feeds folder; an article in
    several feeds is rendered once."""
    entries = Entries(settings)
    rendered: dict[str, bytes] = {}
    for spec in specs:
        rendered.update(assemble(settings, spec, entries.of(spec.articles), hub))
    return rendered

"""Feed fragments: each article's entry rendered once per format, and feeds assembled from
those fragments, byte for byte what feedgen's pretty-printed RSS/Atom (and `json.dumps` with
`indent=2`) would write.

feedgen builds an lxml tree per feed and serializes it: rendering the same article into the
main feed, its topic feeds and its municipalities' feeds costs the tree every time. Here an
entry's text is made once and feeds are joined from it, so a build costs one entry per article
and format plus string joins. The serialization rules copied from lxml and feedgen are few
and exact (escaping, indentation, which elements an empty value drops);
`tests/test_feed_fragments.py` holds them to feedgen's own output, and `render` keeps the
feedgen renderers as that reference. Imports `clock`, `config` and `feeds.render`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring

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

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _text(value: str) -> str:
    """Escape element text as lxml serializes it."""
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("\r", "&#13;") if "\r" in value else value


def _attr(value: str) -> str:
    """Escape an attribute value as lxml serializes it."""
    value = _text(value).replace('"', "&quot;")
    return value.replace("\n", "&#10;").replace("\t", "&#9;")


def _rfc2822(moment: datetime) -> str:
    """feedgen's RSS date (strftime in the C locale), without touching the process locale."""
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    sign, minutes = ("-", -minutes) if minutes < 0 else ("+", minutes)
    return (
        f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
        f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


@dataclass(frozen=True, slots=True)
class Entry:
    """One article's entry in each format, encoded once for every feed it is in, and the date
    its feed's `updated` is taken from."""

    rss: bytes
    atom: bytes
    json: bytes
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class _Parts:
    """An article's values, each escaped or formatted once for all three formats."""

    item: FeedItem
    title: str
    url: str
    teaser: str
    content: str
    published: datetime
    updated: datetime


def _rss_item(p: _Parts) -> str:
    item = p.item
    lines = ["    <item>\n"]
    if p.title:
        lines.append(f"      <title>{_text(p.title)}</title>\n")
    lines.append(f"      <link>{_text(p.url)}</link>\n")
    if p.teaser:
        lines.append(f"      <description>{_text(p.teaser)}</description>\n")
        lines.append(f"      <content:encoded>{_text(p.content)}</content:encoded>\n")
    else:  # feedgen: no description, so the content takes its place
        lines.append(f"      <description>{_text(p.content)}</description>\n")
    lines.append(f'      <guid isPermaLink="false">{_text(item.guid)}</guid>\n')
    lines.extend(f"      <category>{_text(xml_safe(t))}</category>\n" for t in item.topics)
    lines.append(f"      <pubDate>{_rfc2822(p.published)}</pubDate>\n    </item>\n")
    return "".join(lines)


def _atom_entry(p: _Parts, published: str, updated: str) -> str:
    if not p.title:
        raise ValueError("Required fields not set")  # what feedgen raises for an empty title
    summary = f"    <summary>{_text(p.teaser)}</summary>\n" if p.teaser else "    <summary/>\n"
    categories = "".join(f'    <category term="{_attr(xml_safe(t))}"/>\n' for t in p.item.topics)
    return (
        "  <entry>\n"
        f"    <id>{_text(p.item.guid)}</id>\n"
        f"    <title>{_text(p.title)}</title>\n"
        f"    <updated>{updated}</updated>\n"
        f'    <content type="html">{_text(p.content)}</content>\n'
        f'    <link href="{_attr(p.url)}"/>\n'
        f"{summary}{categories}"
        f"    <published>{published}</published>\n"
        "  </entry>\n"
    )


def _json_item(p: _Parts, published: str, updated: str) -> str:
    item = p.item
    fields = [
        ("id", item.guid),
        ("url", p.url),
        ("title", p.title),
        ("summary", p.teaser),
        ("content_html", p.content),
        ("date_published", published),
        ("date_modified", updated),
    ]
    if item.source_url:
        fields.append(("external_url", item.source_url))
    if item.image_url:
        fields.append(("image", item.image_url))
    lines = [f'      "{k}": {encode_basestring(v)}' for k, v in fields]
    if item.topics:
        tags = ",\n".join(f"        {encode_basestring(t)}" for t in item.topics)
        lines.append(f'      "tags": [\n{tags}\n      ]')
    return "    {\n" + ",\n".join(lines) + "\n    }"


def entry(settings: Settings, item: FeedItem, articles_url: str | None = None) -> Entry:
    """An article's entry in RSS, Atom and JSON Feed; `articles_url` is
    `settings.link("artikel/")`, when the caller has it."""
    url = f"{articles_url}{item.slug}" if articles_url else article_url(settings, item)
    parts = _Parts(
        item,
        xml_safe(item.title),
        url,
        xml_safe(item.teaser),
        content_html(settings, item, url),
        item.published_at.astimezone(BERLIN),
        item.updated_at.astimezone(BERLIN),
    )
    published, updated = parts.published.isoformat(), parts.updated.isoformat()
    return Entry(
        _rss_item(parts).encode(),
        _atom_entry(parts, published, updated).encode(),
        _json_item(parts, published, updated).encode(),
        item.updated_at,
    )


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
    title, description = _head_texts(spec)
    document: dict[str, object] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": title,
        "description": description,
        "home_page_url": spec.home_url,
        "feed_url": feed_url(settings, spec.stem, ".json"),
        "language": "de",
        "authors": [{"name": xml_safe(settings.feed_author)}],
    }
    if hub:
        document["hubs"] = [{"type": "WebSub", "url": hub}]
    document["items"] = []
    head = json.dumps(document, ensure_ascii=False, indent=2)
    # "items" is the last key: its empty list closes the document as `[]\n}`.
    head = head[: -len("[]\n}")]
    if not entries:
        return f"{head}[]\n}}\n".encode()
    return b"".join([f"{head}[\n".encode(), b",\n".join(e.json for e in entries), b"\n  ]\n}\n"])


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

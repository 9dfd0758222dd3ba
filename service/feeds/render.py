"""Feed rendering: one feed spec into RSS 2.0, Atom 1.0 or JSON Feed 1.1 bytes.

Owns the feed names and formats, what a feed entry says, and the three renderers built on
feedgen: builds assemble feeds from entry fragments (`fragments`), and these renderers are
the reference the fragments are held to. Imports `clock`, `config` and `text`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from feedgen.feed import FeedGenerator

from service.clock import BERLIN
from service.config import Settings
from service.text import XML_FORBIDDEN

MAIN_FEED = "artikel"
TOPICS_DIR = "themen"
MUNICIPALITIES_DIR = "kommunen"
# How many of the newest articles a municipality's feed is picked from.
MUNICIPALITY_SCAN = 1000
FORMATS = {
    ".xml": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".json": "application/feed+json; charset=utf-8",
}
DEFAULT_TITLE = "Kommunalpartnerschaften mit der Ukraine"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def xml_safe(value: str) -> str:
    """XML 1.0 forbids control characters; stored text should not hold them, but a feed must
    never break."""
    # Every character XML forbids is unprintable (a control, a surrogate or a noncharacter),
    # and `isprintable` is many times faster than the regex: most text takes only that look.
    return value if value.isprintable() else XML_FORBIDDEN.sub("", value)


class FeedItem(Protocol):
    """What a feed entry is made of: a stored `Article`, or the lighter `store.FeedArticle`."""

    @property
    def id(self) -> int: ...
    @property
    def guid(self) -> str: ...
    @property
    def slug(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def teaser(self) -> str: ...
    @property
    def body(self) -> str | None: ...
    @property
    def published_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def image_caption(self) -> str | None: ...
    @property
    def image_url(self) -> str | None: ...
    @property
    def source_url(self) -> str | None: ...
    @property
    def source_id(self) -> int | None: ...
    @property
    def topics(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class FeedSpec:
    """One logical feed: where it goes, what it is called, what it holds."""

    stem: str  # path below feeds_dir without suffix, e.g. "themen/wiederaufbau"
    title: str
    description: str
    home_url: str
    articles: Sequence[FeedItem]


def article_url(settings: Settings, article: FeedItem) -> str:
    return settings.link(f"artikel/{article.slug}")


def source_host(article: FeedItem) -> str:
    """The site an article polled from a source came from, as "Quelle: ..." names it."""
    return urlsplit(article.source_url or "").hostname or article.source_url or ""


def feed_url(settings: Settings, stem: str, suffix: str) -> str:
    return settings.link(f"feeds/{stem}{suffix}")


def content_html(settings: Settings, article: FeedItem, url: str | None = None) -> str:
    """The entry's HTML content; `url` is the article's URL when the caller has it."""
    parts = []
    if article.image_url:
        alt = html.escape(article.image_caption or "", quote=True)
        parts.append(
            f'<figure><img src="{html.escape(article.image_url, quote=True)}" alt="{alt}">'
        )
        if article.image_caption:
            parts.append(f"<figcaption>{html.escape(article.image_caption)}</figcaption>")
        parts.append("</figure>")
    elif article.image_caption:
        parts.append(f"<p><em>Bild: {html.escape(article.image_caption)}</em></p>")
    parts.append(f"<p>{html.escape(article.teaser)}</p>")
    if article.body:
        parts.append(article.body)
    if article.source_id is not None and article.source_url:
        original = html.escape(article.source_url, quote=True)
        parts.append(f'<p>Quelle: <a href="{original}">{html.escape(source_host(article))}</a></p>')
    link = html.escape(url or article_url(settings, article), quote=True)
    parts.append(f'<p><a href="{link}">Weiterlesen</a></p>')
    return xml_safe("".join(parts))


def _last_change(articles: Sequence[FeedItem]) -> datetime:
    return max((a.updated_at for a in articles), default=EPOCH)


def _generator(settings: Settings, spec: FeedSpec, suffix: str) -> FeedGenerator:
    generator = FeedGenerator()
    generator.id(feed_url(settings, spec.stem, ".atom"))
    # feedgen refuses an empty title: a site title of control characters only has none left.
    generator.title(xml_safe(spec.title) or DEFAULT_TITLE)
    generator.subtitle(xml_safe(spec.description) or DEFAULT_TITLE)
    generator.link(href=feed_url(settings, spec.stem, suffix), rel="self")
    # feedgen takes the last link as the RSS channel link: the website, not the feed.
    generator.link(href=spec.home_url, rel="alternate", type="text/html")
    generator.language("de")
    generator.generator("partnerpost")
    # RFC 4287: an entry without atom:author needs one on the feed.
    generator.author({"name": xml_safe(settings.feed_author)})
    updated = _last_change(spec.articles)
    generator.updated(updated.astimezone(BERLIN))
    generator.lastBuildDate(updated.astimezone(BERLIN))
    # feedgen prepends entries, so add the oldest first to keep newest-first order.
    for article in reversed(spec.articles):
        entry = generator.add_entry()
        entry.id(article.guid)
        entry.guid(article.guid, permalink=False)
        entry.title(xml_safe(article.title))
        entry.link(href=article_url(settings, article), rel="alternate", type="text/html")
        entry.published(article.published_at.astimezone(BERLIN))
        entry.updated(article.updated_at.astimezone(BERLIN))
        entry.summary(xml_safe(article.teaser))
        entry.description(xml_safe(article.teaser))
        entry.content(content_html(settings, article), type="html")
        for topic in article.topics:
            entry.category(term=xml_safe(topic))
    return generator


def render_rss(settings: Settings, spec: FeedSpec) -> bytes:
    generator = _generator(settings, spec, ".xml")
    rss: bytes = generator.rss_str(pretty=True)
    return rss


def render_atom(settings: Settings, spec: FeedSpec) -> bytes:
    generator = _generator(settings, spec, ".atom")
    atom: bytes = generator.atom_str(pretty=True)
    return atom


def render_json(settings: Settings, spec: FeedSpec) -> bytes:
    """JSON Feed 1.1, written with `json`: feedgen has no JSON Feed output."""
    items: list[dict[str, Any]] = []
    for article in spec.articles:
        item: dict[str, Any] = {
            "id": article.guid,
            "url": article_url(settings, article),
            "title": xml_safe(article.title),
            "summary": xml_safe(article.teaser),
            "content_html": content_html(settings, article),
            "date_published": article.published_at.astimezone(BERLIN).isoformat(),
            "date_modified": article.updated_at.astimezone(BERLIN).isoformat(),
        }
        if article.source_url:
            item["external_url"] = article.source_url
        if article.image_url:
            item["image"] = article.image_url
        if article.topics:
            item["tags"] = article.topics
        items.append(item)
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": xml_safe(spec.title) or DEFAULT_TITLE,
        "description": xml_safe(spec.description) or DEFAULT_TITLE,
        "home_page_url": spec.home_url,
        "feed_url": feed_url(settings, spec.stem, ".json"),
        "language": "de",
        "authors": [{"name": xml_safe(settings.feed_author)}],
        "items": items,
    }
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


RENDERERS = {".xml": render_rss, ".atom": render_atom, ".json": render_json}

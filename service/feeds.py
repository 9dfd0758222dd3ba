"""Feeds: RSS 2.0, Atom 1.0 and JSON Feed 1.1 files built from the store.

Owns the feed files under `settings.feeds_dir`: their names, their content, and writing
them atomically and only when their bytes change. Imports `config`, `metrics`, `places`
and `store`.

Files: `artikel.{xml,atom,json}` (the newest articles) and
`themen/<topic>.{xml,atom,json}` (one set per topic) and `kommunen/<municipality>.{...}`
(the articles that mention a subscribed municipality or its partner); `.xml` is RSS,
`.atom` Atom.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from feedgen.feed import FeedGenerator
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import metrics, places, store
from service.clock import BERLIN
from service.config import Settings
from service.errors import FeedsBaseUrlChangedError
from service.text import XML_FORBIDDEN

log = logging.getLogger(__name__)

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
# XML 1.0 forbids these; stored text should not hold them, but a feed must never break.
# Site fact: the public URL the current feeds link to.
BASE_URL_FACT = "feeds_base_url"
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def xml_safe(value: str) -> str:
    return XML_FORBIDDEN.sub("", value)


@dataclass(frozen=True)
class FeedSpec:
    """One logical feed: where it goes, what it is called, what it holds."""

    stem: str  # path below feeds_dir without suffix, e.g. "themen/wiederaufbau"
    title: str
    description: str
    home_url: str
    articles: Sequence[store.Article]


@dataclass
class BuildReport:
    written: list[Path] = field(default_factory=list)
    unchanged: int = 0
    removed: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def article_url(settings: Settings, article: store.Article) -> str:
    return settings.link(f"artikel/{article.slug}")


def source_host(article: store.Article) -> str:
    """The site an article polled from a source came from, as "Quelle: ..." names it."""
    return urlsplit(article.source_url or "").hostname or article.source_url or ""


def feed_url(settings: Settings, stem: str, suffix: str) -> str:
    return settings.link(f"feeds/{stem}{suffix}")


def _content_html(settings: Settings, article: store.Article) -> str:
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
    link = html.escape(article_url(settings, article), quote=True)
    parts.append(f'<p><a href="{link}">Weiterlesen</a></p>')
    return xml_safe("".join(parts))


def _last_change(articles: Sequence[store.Article]) -> datetime:
    return max((a.updated_at for a in articles), default=_EPOCH)


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
        entry.content(_content_html(settings, article), type="html")
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
            "content_html": _content_html(settings, article),
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


def write_if_changed(path: Path, content: bytes) -> bool:
    """Atomically replace `path` with `content` unless it already holds exactly that."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == content:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


async def site_title(settings: Settings, session: AsyncSession) -> str:
    if settings.site_title:
        return settings.site_title
    return await store.get_fact(session, store.LISTING_HEADING) or DEFAULT_TITLE


async def feed_specs(settings: Settings, session: AsyncSession) -> list[FeedSpec]:
    """Every feed the store currently calls for."""
    title = await site_title(settings, session)
    home = settings.link("")
    specs = [
        FeedSpec(
            stem=MAIN_FEED,
            title=title,
            description=f"Die neuesten Nachrichten: {title}",
            home_url=home,
            articles=await store.newest_articles(session, settings.feed_size),
        )
    ]
    topic_slugs = await store.topic_slugs(session)
    for topic in await store.all_topics(session):
        slug = topic_slugs[topic]
        specs.append(
            FeedSpec(
                stem=f"{TOPICS_DIR}/{slug}",
                title=f"{title} – Thema: {topic}",
                description=f"Nachrichten zum Thema {topic}",
                home_url=settings.link(f"themen/{slug}"),
                articles=await store.newest_articles(session, settings.feed_size, topic=topic),
            )
        )
    recent = await store.newest_articles(session, MUNICIPALITY_SCAN)
    for subscriber in await store.all_subscribers(session):
        names = places.place_names(subscriber)
        about = [a for a in recent if places.mention_score(a, names) > 0]
        specs.append(
            FeedSpec(
                stem=f"{MUNICIPALITIES_DIR}/{subscriber.slug}",
                title=f"{title} – {subscriber.name}",
                description=f"Nachrichten, die {' oder '.join(names)} erwähnen",
                home_url=home,
                articles=about[: settings.feed_size],
            )
        )
    return specs


def write_feeds(
    settings: Settings, specs: Sequence[FeedSpec], prune: Sequence[str] = ()
) -> BuildReport:
    """Write every format of each spec, then delete feeds in the `prune` folders that no
    spec produced (a topic nobody uses any more, a municipality that left)."""
    report = BuildReport()
    produced: set[Path] = set()
    for spec in specs:
        for suffix, render in RENDERERS.items():
            path = settings.feeds_dir / f"{spec.stem}{suffix}"
            produced.add(path.resolve())
            if write_if_changed(path, render(settings, spec)):
                report.written.append(path)
            else:
                report.unchanged += 1
    for folder in (settings.feeds_dir / name for name in prune):
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.suffix in RENDERERS and path.resolve() not in produced:
                path.unlink(missing_ok=True)
                report.removed.append(path)
    return report


async def _check_base_url(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], *, force: bool
) -> None:
    """Refuse (unless `force`) to rewrite feeds built for another public URL."""
    async with sessions() as session, session.begin():
        recorded = await store.get_fact(session, BASE_URL_FACT)
        if recorded == settings.public_url:
            return
        if recorded is not None:
            if not force:
                raise FeedsBaseUrlChangedError(recorded, settings.public_url)
            log.warning(
                "feeds were built for %s; rebuilding them for %s", recorded, settings.public_url
            )
        await store.set_fact(session, BASE_URL_FACT, settings.public_url)


async def build_feeds(
    settings: Settings,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    *,
    wait: bool = False,
    force: bool = False,
) -> BuildReport | None:
    """Build all feeds; None when another process is building them right now, or, with
    `wait`, after it has finished (so the build sees what the caller just stored).

    Raises `FeedsBaseUrlChangedError` when the feeds were built for another public URL,
    unless `force` (the server's own builds force: its settings are the live ones).
    """
    started = time.perf_counter()
    async with store.exclusive(engine, "feeds", wait=wait) as acquired:
        if not acquired:
            log.info("feed build skipped: another process holds the feeds lock")
            return None
        await _check_base_url(settings, sessions, force=force)
        async with sessions() as session:
            specs = await feed_specs(settings, session)
        report = write_feeds(settings, specs, prune=(TOPICS_DIR, MUNICIPALITIES_DIR))
    report.seconds = time.perf_counter() - started
    metrics.FEED_BUILD_SECONDS.observe(report.seconds)
    log.info(
        "feeds built: %d written, %d unchanged, %d removed in %.3fs",
        len(report.written),
        report.unchanged,
        len(report.removed),
        report.seconds,
    )
    return report

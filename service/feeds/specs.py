"""Feed specs: which feeds the store calls for (the newest articles, one per topic, one
per subscribed municipality) and what each holds.

The articles are read once (the newest `MUNICIPALITY_SCAN` or `feed_size`, whichever is
more) and every feed is picked from them; a topic whose feed reaches further back gets a
query of its own. Which municipalities an article mentions is asked of one `Matcher` for
all of them, and kept in a `Mentions` cache across builds: an article is matched again only
when it or the municipalities change. Imports `config`, `places`, `store` and the other
`feeds` modules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from service import places, store
from service.config import Settings
from service.feeds.mentions import Matcher
from service.feeds.render import (
    DEFAULT_TITLE,
    MAIN_FEED,
    MUNICIPALITIES_DIR,
    MUNICIPALITY_SCAN,
    TOPICS_DIR,
    FeedSpec,
)


async def site_title(settings: Settings, session: AsyncSession) -> str:
    if settings.site_title:
        return settings.site_title
    return await store.get_fact(session, store.LISTING_HEADING) or DEFAULT_TITLE


@dataclass
class Mentions:
    """Which municipalities each article mentions, kept while the municipalities stay."""

    municipalities: tuple[store.Municipality, ...] = ()
    matcher: Matcher | None = None
    names: dict[int, list[str]] = field(default_factory=dict)  # municipality → place names
    found: dict[tuple[int, datetime], frozenset[int]] = field(default_factory=dict)

    def of(
        self, municipalities: Sequence[store.Municipality], articles: Sequence[store.FeedArticle]
    ) -> list[frozenset[int]]:
        """The ids of the municipalities each article mentions."""
        if self.matcher is None or tuple(municipalities) != self.municipalities:
            self.municipalities = tuple(municipalities)
            self.matcher = Matcher(municipalities, (m.id for m in municipalities))
            self.names = {m.id: places.place_names(m) for m in municipalities}
            self.found = {}
        found, matcher = self.found, self.matcher
        keys = [(a.id, a.updated_at) for a in articles]
        result = []
        for key, article in zip(keys, articles, strict=True):
            ids = found.get(key)
            if ids is None:
                ids = found[key] = frozenset(matcher.mentioned(article))
            result.append(ids)
        self.found = {key: found[key] for key in keys}  # forget what left the window
        return result


async def feed_specs(
    settings: Settings, session: AsyncSession, mentions: Mentions | None = None
) -> list[FeedSpec]:
    """Every feed the store currently calls for."""
    title = await site_title(settings, session)
    home = settings.link("")
    size = settings.feed_size
    scan = max(size, MUNICIPALITY_SCAN)
    # One more than the window: when it does not come, the window holds every article and
    # no topic feed needs a query of its own.
    window = await store.feed_articles(session, scan + 1)
    complete = len(window) <= scan
    window = window[:scan]
    specs = [
        FeedSpec(
            stem=MAIN_FEED,
            title=title,
            description=f"Die neuesten Nachrichten: {title}",
            home_url=home,
            articles=window[:size],
        )
    ]
    by_topic: dict[str, list[store.FeedArticle]] = defaultdict(list)
    for article in window:
        for topic in article.topics:
            by_topic[topic].append(article)
    for topic, slug in (await store.topic_slugs(session)).items():
        about = by_topic[topic]
        if len(about) < size and not complete:  # older ones may be missing
            about = await store.feed_articles(session, size, topic=topic)
        specs.append(
            FeedSpec(
                stem=f"{TOPICS_DIR}/{slug}",
                title=f"{title} – Thema: {topic}",
                description=f"Nachrichten zum Thema {topic}",
                home_url=settings.link(f"themen/{slug}"),
                articles=about[:size],
            )
        )
    municipalities = await store.municipalities(session)
    specs.extend(_municipality_specs(settings, title, municipalities, window, mentions))
    return specs


def _municipality_specs(
    settings: Settings,
    title: str,
    municipalities: Sequence[store.Municipality],
    window: Sequence[store.FeedArticle],
    mentions: Mentions | None,
) -> list[FeedSpec]:
    if not municipalities:
        return []
    mentions, home = mentions or Mentions(), settings.link("")
    recent = window[:MUNICIPALITY_SCAN]
    about: dict[int, list[store.FeedArticle]] = defaultdict(list)
    for article, ids in zip(recent, mentions.of(municipalities, recent), strict=True):
        for ident in ids:
            about[ident].append(article)
    names = mentions.names
    return [
        FeedSpec(
            stem=f"{MUNICIPALITIES_DIR}/{municipality.slug}",
            title=f"{title} – {municipality.name}",
            description=f"Nachrichten, die {' oder '.join(names[municipality.id])} erwähnen",
            home_url=home,
            articles=about[municipality.id][: settings.feed_size],
        )
        for municipality in municipalities
    ]

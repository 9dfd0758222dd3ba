"""Feed specs: which feeds the store calls for (the newest articles, one per topic, one
per subscribed municipality) and what each holds.

Imports `config`, `places`, `store` and `feeds.render`.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from service import places, store
from service.config import Settings
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

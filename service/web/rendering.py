"""Page rendering: the site's HTML pages with what every page carries.

Owns the frame around a page's own content: the site title, the feed links a browser or
feed reader discovers (the main feed in three formats, one Atom feed per topic), the links
to articles and topics, the privacy notice and the imprint. Imports `config`, `store`,
`feeds`, `consent` and `templating`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from service import consent, feeds, store, templating
from service.config import Settings

# The main feed's formats: (file extension, media type, label).
_MAIN_FEED_FORMATS = (
    (".xml", "application/rss+xml", "RSS"),
    (".atom", "application/atom+xml", "Atom"),
    (".json", "application/feed+json", "JSON Feed"),
)


@dataclass(frozen=True)
class FeedLink:
    """A `<link rel="alternate">` to a feed in a page's head."""

    href: str
    type: str
    title: str
    label: str


class PageRenderer:
    """Renders `templates/web/<name>.html.j2` for these settings; one per app."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._templates = templating.environment()
        self._legal = consent.legal_links(settings)

    def article_url(self, article: store.Article) -> str:
        return feeds.article_url(self._settings, article)

    async def page(
        self, session: AsyncSession, name: str, code: int = 200, **context: Any
    ) -> HTMLResponse:
        """The page `name` with `context`, answered with status `code`."""
        settings = self._settings
        title = await feeds.site_title(settings, session)
        links = [
            FeedLink(feeds.feed_url(settings, feeds.MAIN_FEED, suffix), media_type, title, label)
            for suffix, media_type, label in _MAIN_FEED_FORMATS
        ]
        topic_slugs = await store.topic_slugs(session)

        def topic_url(topic: str) -> str:
            return settings.link(f"themen/{topic_slugs[topic]}")

        for topic in await store.all_topics(session):
            stem = f"{feeds.TOPICS_DIR}/{topic_slugs[topic]}"
            links.append(
                FeedLink(
                    feeds.feed_url(settings, stem, ".atom"),
                    "application/atom+xml",
                    f"{title} – Thema: {topic}",
                    f"Thema {topic}",
                )
            )
        body = self._templates.get_template(f"web/{name}.html.j2").render(
            site_title=title,
            home_url=settings.link(""),
            feeds=links,
            article_url=self.article_url,
            topic_url=topic_url,
            privacy_url=self._legal.privacy_url,
            imprint_url=self._legal.imprint_url,
            **context,
        )
        return HTMLResponse(body, status_code=code)


class View:
    """The renderer bound to one request's session (see `dependencies.PageView`)."""

    def __init__(self, renderer: PageRenderer, session: AsyncSession) -> None:
        self.renderer = renderer
        self.session = session

    async def page(self, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        return await self.renderer.page(self.session, name, code, **context)

    async def message(self, heading: str, *paragraphs: str, code: int = 200) -> HTMLResponse:
        """The page with one heading and a few paragraphs of German text."""
        return await self.page("message", code=code, heading=heading, paragraphs=paragraphs)

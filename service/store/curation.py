"""Curation: what operators do to stored articles in the console.

Owns no table of its own: searching the `articles` table (hidden ones included), hiding an
article and showing it again, and editing its title, teaser and topics. Every change moves
`updated_at`, so the feeds' version changes and feed readers see an edit. Imports `base`
and `articles`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import utcnow
from service.store.articles import Article, ArticleTopic


@dataclass(frozen=True)
class ArticlePage:
    """One page of a search: its articles, and how many match in all."""

    articles: Sequence[Article]
    total: int


def _matching(text: str, topic: str | None, hidden: bool | None) -> Select[Article]:
    query = select(Article)
    text = text.strip()
    if text:
        in_topic = select(ArticleTopic.article_id).where(
            ArticleTopic.topic.icontains(text, autoescape=True)
        )
        query = query.where(
            or_(
                Article.title.icontains(text, autoescape=True),
                Article.place.icontains(text, autoescape=True),
                Article.id.in_(in_topic),
            )
        )
    if topic:
        query = query.where(
            Article.id.in_(select(ArticleTopic.article_id).where(ArticleTopic.topic == topic))
        )
    if hidden is not None:
        query = query.where(
            Article.hidden_at.is_not(None) if hidden else Article.hidden_at.is_(None)
        )
    return query


async def search_articles(
    session: AsyncSession,
    text: str = "",
    *,
    topic: str | None = None,
    hidden: bool | None = None,
    offset: int = 0,
    limit: int = 50,
) -> ArticlePage:
    """Articles whose title, place or a topic contains `text` (any case), in `topic` if
    given, only hidden (True) or only visible (False) ones if asked; newest first."""
    query = _matching(text, topic, hidden)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    ordered = query.order_by(Article.published_at.desc(), Article.id.desc())
    articles = (await session.scalars(ordered.offset(offset).limit(limit))).all()
    return ArticlePage(articles, int(total or 0))


async def article_by_id(session: AsyncSession, article_id: int) -> Article | None:
    return await session.get(Article, article_id)


def set_hidden(article: Article, hidden: bool, now: datetime | None = None) -> bool:
    """Hide the article or show it again; False when it already was so."""
    if (article.hidden_at is not None) == hidden:
        return False
    now = now or utcnow()
    article.hidden_at = now if hidden else None
    article.updated_at = now
    return True


def edit_article(
    article: Article,
    title: str,
    teaser: str,
    topics: Sequence[str],
    now: datetime | None = None,
) -> bool:
    """Replace title, teaser and topics (validated by the caller); `updated_at` moves only
    when something changed. False when nothing did."""
    wanted = sorted(set(topics))
    changed = article.title != title or article.teaser != teaser or article.topics != wanted
    if not changed:
        return False
    article.title, article.teaser = title, teaser
    if article.topics != wanted:
        article.topic_rows = [ArticleTopic(topic=t) for t in wanted]
    article.updated_at = now or utcnow()
    return True

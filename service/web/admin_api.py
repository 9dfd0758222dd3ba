"""Admin API: the agency's tools read, create and edit articles with a bearer token.

Owns `/api/articles` and the shape an article has there (`ArticleOut`). A change that
alters an article asks the runtime for a feed build now. Imports `store`, `ingest`,
`feeds` and the web package's `dependencies`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel

from service import feeds, ingest, store
from service.errors import ArticleNotFoundError
from service.web.dependencies import AppRuntime, AppSettings, Session, require_admin

router = APIRouter(dependencies=[Depends(require_admin)], tags=["admin"])


class ArticleOut(BaseModel):
    """An article as the admin API returns it."""

    id: int
    key: str
    guid: str
    slug: str
    url: str
    title: str
    teaser: str
    body: str | None
    place: str
    published: datetime
    image_caption: str | None
    image_url: str | None
    source_url: str | None
    topics: list[str]
    created: datetime
    updated: datetime
    hidden: datetime | None  # when an operator hid it in the console; None: shown

    @classmethod
    def of(cls, article: store.Article, url: str) -> ArticleOut:
        return cls(
            id=article.id,
            key=article.key,
            guid=article.guid,
            slug=article.slug,
            url=url,
            title=article.title,
            teaser=article.teaser,
            body=article.body,
            place=article.place,
            published=article.published_at,
            image_caption=article.image_caption,
            image_url=article.image_url,
            source_url=article.source_url,
            topics=article.topics,
            created=article.created_at,
            updated=article.updated_at,
            hidden=article.hidden_at,
        )


async def _stored(db_session: Session, slug: str) -> store.Article:
    """The article with this slug, or 404."""
    try:
        return await store.article_by_slug(db_session, slug)
    except ArticleNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.get("/api/articles")
async def list_articles(
    db_session: Session,
    settings: AppSettings,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Sequence[ArticleOut]:
    articles = await store.newest_articles(db_session, limit)
    return [ArticleOut.of(a, feeds.article_url(settings, a)) for a in articles]


@router.get("/api/articles/{slug}")
async def get_article(slug: str, db_session: Session, settings: AppSettings) -> ArticleOut:
    article = await _stored(db_session, slug)
    return ArticleOut.of(article, feeds.article_url(settings, article))


@router.post("/api/articles", status_code=201)
async def create_article(
    body: ingest.ArticleIn,
    response: Response,
    db_session: Session,
    settings: AppSettings,
    runtime: AppRuntime,
) -> ArticleOut:
    """Create an article; one that is already stored (same key) is updated (200)."""
    async with db_session.begin():
        outcome, article = await store.save_article(db_session, body.to_data())
    if outcome is not store.SaveOutcome.CREATED:
        response.status_code = status.HTTP_200_OK
    if outcome is not store.SaveOutcome.UNCHANGED:
        runtime.request_feed_refresh()
    return ArticleOut.of(article, feeds.article_url(settings, article))


@router.put("/api/articles/{slug}")
async def update_article(
    slug: str,
    body: ingest.ArticleIn,
    db_session: Session,
    settings: AppSettings,
    runtime: AppRuntime,
) -> ArticleOut:
    """Replace an article's fields; its key, slug and feed id stay."""
    async with db_session.begin():
        existing = await _stored(db_session, slug)
        data = body.model_copy(update={"key": existing.key}).to_data()
        outcome, article = await store.save_article(db_session, data)
    if outcome is not store.SaveOutcome.UNCHANGED:
        runtime.request_feed_refresh()
    return ArticleOut.of(article, feeds.article_url(settings, article))

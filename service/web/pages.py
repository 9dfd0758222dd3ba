"""Public pages: the front page, topic pages, article pages, privacy notice and imprint.

Owns the routes readers open in a browser; all German, none in the OpenAPI document.
Imports `store`, `consent` and the web package's `dependencies`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException

from service import consent, store
from service.errors import ArticleNotFoundError
from service.web.dependencies import AppSettings, PageView, Session
from service.web.rendering import PageRenderer, View

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def index(db_session: Session, view: PageView, settings: AppSettings) -> HTMLResponse:
    articles = await store.newest_articles(db_session, settings.feed_size)
    return await view.page("index", articles=articles, heading=None)


@router.get("/themen/{slug}", response_class=HTMLResponse)
async def topic_page(
    slug: str, db_session: Session, view: PageView, settings: AppSettings
) -> HTMLResponse:
    topics = {s: t for t, s in (await store.topic_slugs(db_session)).items()}
    if slug not in topics:
        return await view.page("not_found", code=404)
    articles = await store.newest_articles(db_session, settings.feed_size, topics[slug])
    return await view.page("index", articles=articles, heading=f"Thema: {topics[slug]}")


@router.get("/artikel/{slug}", response_class=HTMLResponse)
async def article_page(slug: str, db_session: Session, view: PageView) -> HTMLResponse:
    try:
        article = await store.article_by_slug(db_session, slug)
    except ArticleNotFoundError:
        return await view.page("not_found", code=404)
    if article.hidden_at is not None:  # hidden in the console: gone until shown again
        return await view.page("not_found", code=410)
    return await view.page("article", article=article)


@router.get("/datenschutz", response_class=HTMLResponse)
async def privacy_page(view: PageView, settings: AppSettings) -> Response:
    if settings.privacy_url:
        return RedirectResponse(settings.privacy_url, status_code=307)
    return await view.message("Datenschutzerklärung", *consent.paragraphs(settings.privacy_text))


@router.get("/impressum", response_class=HTMLResponse)
async def imprint_page(view: PageView, settings: AppSettings) -> Response:
    if settings.imprint_url:
        return RedirectResponse(settings.imprint_url, status_code=307)
    return await view.message("Impressum", *consent.paragraphs(settings.imprint_text))


async def not_found(request: Request, exc: Exception) -> Response:
    """404 for a path no route knows: the German page for people, FastAPI's JSON for the
    API's clients (and for a route that raised its own 404 with a detail)."""
    if request.url.path.startswith("/api/") or (
        isinstance(exc, HTTPException) and exc.detail != "Not Found"
    ):
        assert isinstance(exc, HTTPException)
        return await http_exception_handler(request, exc)
    renderer: PageRenderer = request.app.state.renderer
    async with request.app.state.sessions() as session:
        return await View(renderer, session).page("not_found", code=404)

"""App assembly: `create_app(settings)` builds the ASGI app from the web package's routers.

Owns what the app holds for its routes on `app.state` (settings, engine, sessions, page
renderer, link tokens, runtime, the console's cookies), the guards and error handlers,
and the lifespan: it creates and migrates the engine, loads the published feeds into
memory and follows the store (`web.feeds`, `web.pagecache`), runs the `Runtime` (scheduler, digests,
confirmation mails, feed builds) while serving, and closes them in order. In front of
FastAPI itself sit the feed route, the access log and the page cache (see `_Fronted`).
Imports `config`, `store`, `subscribers`, `runtime` and the package's modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Receive, Scope, Send

from service import store, subscribers
from service.config import Settings
from service.runtime import Runtime
from service.web import (
    accesslog,
    admin_api,
    archive,
    console,
    feeds,
    guards,
    operations,
    pagecache,
    pages,
    rendering,
    sources,
    subscriptions,
)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Migrate, run the background parts while the app serves, then stop them and close."""
    settings: Settings = app.state.settings
    engine = store.create_engine(settings.database_url)
    try:
        await store.upgrade(engine)
        sessions = store.session_factory(engine)
        app.state.engine = engine
        app.state.sessions = sessions
        async with (
            feeds.following(app.state.feed_cache, sessions),
            pagecache.following(app.state.page_cache, sessions),
            Runtime(settings, engine, sessions) as runtime,
        ):
            app.state.runtime = runtime
            app.state.scheduler = runtime.scheduler  # so callers holding the app reach it
            yield
    finally:
        await engine.dispose()


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app for these settings; its lifespan migrates and starts the scheduler."""
    # /docs and /redoc with their scripts served from the fastapi-offline package, not a CDN.
    app = FastAPIOffline(
        title="partnerpost",
        description="Feeds and digests of news about German–Ukrainian municipal partnerships.",
        lifespan=_lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.add_middleware(GZipMiddleware, minimum_size=500)
    guards.install(app)
    app.add_exception_handler(subscribers.InvalidTokenError, subscriptions.invalid_link)
    app.add_exception_handler(404, pages.not_found)
    console.install(app, settings)
    app.state.settings = settings
    app.state.renderer = rendering.PageRenderer(settings)
    app.state.tokens = subscribers.Tokens(settings)
    app.state.feed_cache = feeds.FeedCache(settings)
    app.state.page_cache = pagecache.PageCache(settings.feeds_poll_seconds)
    accesslog.install()
    for router in (
        pages.router,
        archive.router,
        operations.router,
        subscriptions.router,
        admin_api.router,
        sources.router,
        console.router,
    ):
        app.include_router(router)
    _in_front(app, app.state.feed_cache, app.state.page_cache)
    return app


class _Fronted(FastAPI):
    """The app with the feed route, the access log and the page cache in front of FastAPI
    itself: a feed request passes nothing of FastAPI's, a cached page only the access log.
    FastAPI checks on every request whether OpenTelemetry is configured (three environment
    lookups that each raise and catch a KeyError, about as much as the feed route's whole
    answer); behind the front only the requests the routers answer pay for it."""

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)

    async def behind_front(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI as it is: its telemetry, then the middleware stack and the routers."""
        await super().__call__(scope, receive, send)


def _in_front(app: FastAPI, cache: feeds.FeedCache, pages: pagecache.PageCache) -> None:
    """Put the feed route, the access log and the page cache in front of `app`."""
    # `FastAPIOffline` builds a plain FastAPI object; the subclass adds no state of its own
    # but `front`, so the object takes its class.
    app.__class__ = _Fronted
    assert isinstance(app, _Fronted)
    page_route = pagecache.PageRoute(pages, app.behind_front)
    app.front = feeds.FeedRoute(cache, accesslog.AccessLog(page_route))

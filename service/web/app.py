"""App assembly: `create_app(settings)` builds the ASGI app from the web package's routers.

Owns what the app holds for its routes on `app.state` (settings, engine, sessions, page
renderer, link tokens, runtime, the console's cookies), the guards and error handlers,
and the lifespan: it creates and migrates the engine, runs the `Runtime` (scheduler,
digests, confirmation mails, feed builds) while serving, and closes both in order.
Imports `config`, `store`, `subscribers`, `runtime` and the package's modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi_offline import FastAPIOffline

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
        async with Runtime(settings, engine, sessions) as runtime:
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
    feeds.mount(app, settings)
    console.install(app, settings)
    app.state.settings = settings
    app.state.renderer = rendering.PageRenderer(settings)
    app.state.tokens = subscribers.Tokens(settings)
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
    return app

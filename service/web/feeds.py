"""Feeds over HTTP: `/feeds/...` answered from memory, the same on every replica.

Owns the server's copy of the published feeds (`FeedCache`: bytes, content-derived ETag,
Last-Modified, gzip and brotli made on first demand) and how it follows the store: loaded
in full before the server answers, then refreshed whenever the store's feed publication
version moves (polled every `feeds_poll_seconds`; one row read). With
`settings.feeds_dir` each replica also keeps the export folder in step.

`FeedRoute` answers `/feeds/...` as plain ASGI in front of the app (of FastAPI's own work
per request and of the middleware stack, see `web.app`): no thread, no database, no
access-log line (a counter instead), and for a path it does not know it hands the request
on, so the app answers with its German 404 page. It honours
`Accept-Encoding`, `If-None-Match`, `If-Modified-Since` and HEAD (see `conditional`).
Imports `config`, `metrics`, `store`, `feeds` and the web package's `conditional`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from service import feeds, metrics, store
from service.config import Settings
from service.web import polling
from service.web.conditional import Negotiated, respond

log = logging.getLogger(__name__)

PREFIX = "/feeds/"
_METHODS = ("GET", "HEAD")
_NOT_ALLOWED = [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]


class ServedFeed(Negotiated):
    """A published feed as this server holds it."""

    version: int = 0


class FeedCache:
    """Every published feed by its path below `/feeds/`, replaced as a whole on refresh (a
    request sees the old set or the new one, never half of each)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.poll_seconds = settings.feeds_poll_seconds
        self._cache_control = f"public, max-age={settings.feed_max_age}".encode("ascii")
        self.documents: dict[str, ServedFeed] = {}
        self.version: int | None = None

    async def refresh(self, sessions: async_sessionmaker[AsyncSession]) -> bool:
        """Follow the store if its publication version moved; whether anything changed."""
        async with sessions() as session:
            version = await store.feed_publication_version(session)
            if version == self.version:
                return False
            listed = await store.feed_document_versions(session)
            stale = [p for p, v in listed.items() if _version_of(self.documents.get(p)) != v]
            loaded = await store.feed_documents(session, stale)
        documents = {path: doc for path, doc in self.documents.items() if path in listed}
        removed = [path for path in self.documents if path not in listed]
        for row in loaded:
            documents[row.path] = self._document(row)
        self.documents = documents
        self.version = version
        if loaded or removed:
            log.info(
                "feeds: %d changed, %d removed (version %d)", len(loaded), len(removed), version
            )
        if self._settings.feeds_dir is not None:
            changed = {row.path: row.content for row in loaded}
            await asyncio.to_thread(feeds.export_feeds, self._settings.feeds_dir, changed, removed)
        return True

    def _document(self, row: store.FeedDocument) -> ServedFeed:
        media_type = feeds.FORMATS.get(os.path.splitext(row.path)[1], "application/octet-stream")
        document = ServedFeed(
            row.content, row.etag, row.modified_at, media_type.encode("ascii"), self._cache_control
        )
        document.version = row.version
        return document


def _version_of(document: ServedFeed | None) -> int | None:
    return None if document is None else document.version


def following(
    cache: FeedCache, sessions: async_sessionmaker[AsyncSession]
) -> AbstractAsyncContextManager[None]:
    """Load every published feed, then keep following the store until the block ends."""
    return polling.following("feeds", lambda: cache.refresh(sessions), cache.poll_seconds)


class FeedRoute:
    """Answers `/feeds/<path>` from the cache and hands every other request to `app`."""

    def __init__(self, cache: FeedCache, app: ASGIApp) -> None:
        self.cache = cache
        self.app = app
        self._ok = metrics.FEED_RESPONSES.labels("200")
        self._not_modified = metrics.FEED_RESPONSES.labels("304")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"] if scope["type"] == "http" else ""
        document = self.cache.documents.get(path[7:]) if path.startswith(PREFIX) else None
        if document is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in _METHODS:
            await send({"type": "http.response.start", "status": 405, "headers": _NOT_ALLOWED})
            await send({"type": "http.response.body", "body": b""})
            return
        if await respond(scope, send, document) == 304:
            self._not_modified.inc()
        else:
            self._ok.inc()

"""Page cache: public pages rendered once and answered from memory until the site changes.

Owns which pages are cached (the start page, topic, article and archive pages and the
archive feed: none of them carries anything of the request, no cookie, token or form;
never the console, token links, the API or an error page), the cached bytes with a
content-derived ETag (304 on `If-None-Match`, gzip and brotli like the feeds), and when
they are dropped: when the store's site version moves (articles, municipalities, listing
heading, sent digests; polled every `feeds_poll_seconds`, which catches other processes),
and at once after any request of this process that may change something (not GET/HEAD,
and not refused with a 4xx, which changed nothing: else anyone could empty the cache with
every request). A page rendered while the cache was dropped is not kept (the generation
moved). A page is kept by its decoded path and the one query parameter cached pages read
(`seite`, the archive's page number): `/?1`, `/?2`, ... or a percent-encoded slug share one
entry instead of filling the cache.
Imports `metrics`, `store` and the web package's `conditional`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import AbstractAsyncContextManager
from urllib.parse import parse_qs

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics, store
from service.web import polling
from service.web.conditional import Negotiated, respond

log = logging.getLogger(__name__)

# Paths of the public pages that depend only on the store (and the settings).
CACHED_PATHS = re.compile(
    r"/|/themen/[^/]+|/artikel/[^/]+|/archiv|/archiv/feed\.atom|/archiv/[^/]+/[^/]+"
)
_SAFE = ("GET", "HEAD")
# At most this many pages are kept (query strings make keys; a flood of them must not
# grow memory); beyond it, pages are rendered but not kept until the next drop.
MAX_PAGES = 1000


async def site_version(session: AsyncSession) -> str:
    """Changes whenever a cached page may change."""
    sent = (await store.counts_by_status(session, store.Delivery)).get("sent", 0)
    return f"{await store.feeds_version(session)}|{sent}"


class PageCache:
    """Rendered pages by path and query; `PageCache.route(app)` serves them."""

    def __init__(self, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self.pages: dict[str, Negotiated] = {}
        self.generation = 0
        self.version: str | None = None

    def drop(self) -> None:
        self.pages = {}
        self.generation += 1

    async def refresh(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session:
            version = await site_version(session)
        if version != self.version:
            self.drop()
            self.version = version

    def keep(self, key: str, generation: int, page: Negotiated) -> None:
        if generation == self.generation and len(self.pages) < MAX_PAGES:
            self.pages[key] = page


def following(
    cache: PageCache, sessions: async_sessionmaker[AsyncSession]
) -> AbstractAsyncContextManager[None]:
    """Take the site version, then keep following it until the block ends; when a check
    fails, pages are rendered afresh (unsure what changed)."""
    return polling.following(
        "pages", lambda: cache.refresh(sessions), cache.poll_seconds, on_failure=cache.drop
    )


class PageRoute:
    """Answers cached pages from memory; renders the others through `app`, keeping what
    may be kept."""

    def __init__(self, cache: PageCache, app: ASGIApp) -> None:
        self.cache = cache
        self.app = app
        self._hits = metrics.PAGE_RESPONSES.labels("cache")
        self._renders = metrics.PAGE_RESPONSES.labels("render")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in _SAFE:
            await self._change(scope, receive, send)
            return
        path: str = scope["path"]
        if not CACHED_PATHS.fullmatch(path):
            await self.app(scope, receive, send)
            return
        key = _key(path, scope["query_string"])
        page = self.cache.pages.get(key)
        if page is not None:
            self._hits.inc()
            await respond(scope, send, page)
            return
        self._renders.inc()
        await self._render(scope, receive, send, key)

    async def _change(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request that may change what pages show: drop them unless it was refused."""
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if not 400 <= status < 500:
                self.cache.drop()

    async def _render(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        """Render through the app as identity (the cache compresses by itself) and keep a
        plain 200 without cookies."""
        generation = self.cache.generation
        headers = [
            (n, v) for n, v in scope["headers"] if n not in (b"accept-encoding", b"if-none-match")
        ]
        inner = {**scope, "method": "GET", "headers": headers}
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(inner, receive, capture)
        page = _page(start, b"".join(chunks))
        if page is None:  # not to be kept: answer exactly what the app said
            await send(start)
            body = b"" if scope["method"] == "HEAD" else b"".join(chunks)
            await send({"type": "http.response.body", "body": body})
            return
        self.cache.keep(key, generation, page)
        await respond(scope, send, page)


def _page(start: Message, body: bytes) -> Negotiated | None:
    """A page to keep, or None (not a 200, sets a cookie, or has no content type)."""
    headers = dict(start.get("headers", []))
    if start.get("status") != 200 or b"set-cookie" in headers:
        return None
    media_type = headers.get(b"content-type")
    if media_type is None:
        return None
    etag = hashlib.blake2b(body, digest_size=16).hexdigest()
    return Negotiated(body, etag, None, media_type, None)


def _key(path: str, query: bytes) -> str:
    """The cache key: the path, and for the archive's pages the page number asked for (the
    last `seite` wins, as it does for the route)."""
    if b"seite" not in query or not path.startswith("/archiv"):
        return path
    pages = parse_qs(query.decode("latin-1")).get("seite")
    return f"{path}?seite={pages[-1]}" if pages else path

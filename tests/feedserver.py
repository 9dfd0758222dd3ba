"""A scripted HTTP server for source tests: serves files with real ETag and
Last-Modified (and gzip), and plays scripted replies (errors, redirects, slow or huge
bodies) per path, recording every request and how many were in flight at once."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status with headers and body, after `delay` seconds; with
    `chunks`, the body streams in that many pieces without a Content-Length."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunks: int = 0


@dataclass
class _File:
    body: bytes
    content_type: str
    etag: str
    last_modified: str


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


class FeedServer:
    """The ASGI app; `url(path)` is valid once the fixture serves it."""

    def __init__(self) -> None:
        self.base = ""
        self.files: dict[str, _File] = {}
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[Seen] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.delay = 0.0  # added to every answer
        self._version = 0

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def publish(self, path: str, body: bytes | str, content_type: str) -> None:
        """Serve `body` at `path` with a new ETag and a later Last-Modified."""
        data = body.encode() if isinstance(body, str) else body
        self._version += 1
        moment = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=self._version)
        self.files[path] = _File(
            data,
            content_type,
            f'"{hashlib.sha256(data).hexdigest()[:16]}"',
            format_datetime(moment, usegmt=True),
        )

    def script(self, path: str, *replies: Reply) -> None:
        """Answer `path` with these replies in turn; the last one repeats."""
        self.scripts[path] = list(replies)

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = Request(scope, receive)
        self.requests.append(Seen(request.url.path, dict(request.headers)))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            response = await self._answer(request)
        finally:
            self.in_flight -= 1
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        path = request.url.path
        replies = self.scripts.get(path)
        if replies:
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
            await asyncio.sleep(reply.delay)
            if reply.chunks:
                piece = reply.body

                async def stream():
                    for _ in range(reply.chunks):
                        yield piece

                return StreamingResponse(stream(), reply.status, reply.headers)
            return Response(reply.body, reply.status, reply.headers)
        served = self.files.get(path)
        if served is None:
            return Response(b"not found", 404)
        headers = {"ETag": served.etag, "Last-Modified": served.last_modified}
        if request.headers.get("if-none-match") == served.etag or (
            request.headers.get("if-modified-since") == served.last_modified
        ):
            return Response(status_code=304, headers=headers)
        body = served.body
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return Response(body, 200, headers, media_type=served.content_type)


def rss(*items: str, title: str = "Pressemitteilungen") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://example.org/</link><description>d</description>"
        + "".join(items)
        + "</channel></rss>"
    )


def item(
    title: str,
    guid: str | None = None,
    date: str = "Mon, 04 Mar 2024 10:00:00 +0100",
    description: str | None = None,
    link: str | None = None,
) -> str:
    parts = [f"<title>{title}</title>", f"<pubDate>{date}</pubDate>"]
    if guid is not None:
        parts.append(f'<guid isPermaLink="false">{guid}</guid>')
    if link is not None:
        parts.append(f"<link>{link}</link>")
    parts.append(f"<description>{description or f'Mehr über {title}.'}</description>")
    return "<item>" + "".join(parts) + "</item>"

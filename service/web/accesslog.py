"""Access log: one line per request in uvicorn's format, written by the app, and the tokens
in confirmation, unsubscribe and preference links never reach a log line.

`serve` turns uvicorn's own access log off and `AccessLog` writes the same line to the
logger `service.web.access` for every request the app handles (not to `uvicorn.access`:
uvicorn logs every request itself whenever that logger reaches a handler, feeds included);
feed requests, answered in front of it, are counted instead (see `web.feeds`). The links
carry their token in the path: a filter on these loggers replaces each token segment with
`[token]` before any handler formats the record, whatever the log format. Imports nothing
from the package.
"""

from __future__ import annotations

import logging
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The path prefixes whose next segment is a token (see `web.subscriptions`).
TOKEN_PATHS = ("bestaetigen", "abmelden", "einstellungen")
REDACTED = "[token]"
_TOKEN_SEGMENT = re.compile(rf"/({'|'.join(TOKEN_PATHS)})/[^/?#\s\"]+")
_LOGGERS = ("uvicorn.access", "uvicorn.error", "service.web.access")
_ACCESS = logging.getLogger("service.web.access")


def redact(text: str) -> str:
    """`text` with every token segment of a link path replaced."""
    return _TOKEN_SEGMENT.sub(rf"/\1/{REDACTED}", text)


class TokenRedactingFilter(logging.Filter):
    """Rewrites a record's arguments (or message) so no link token is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install() -> None:
    """Attach the filter to uvicorn's loggers once per process."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactingFilter) for f in logger.filters):
            logger.addFilter(TokenRedactingFilter())


class AccessLog:
    """Logs each HTTP request `app` answers as uvicorn would: client, request line, status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _ACCESS.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                _log(scope, message["status"])
            await send(message)

        await self.app(scope, receive, logged)


def _log(scope: Scope, status: int) -> None:
    client = scope.get("client")
    target = scope["raw_path"].decode("latin-1")
    if scope["query_string"]:
        target = f"{target}?{scope['query_string'].decode('ascii')}"
    _ACCESS.info(
        '%s - "%s %s HTTP/%s" %d',
        f"{client[0]}:{client[1]}" if client else "",
        scope["method"],
        target.replace('"', "%22"),
        scope["http_version"],
        status,
    )

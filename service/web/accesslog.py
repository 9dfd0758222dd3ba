"""Access log redaction: the tokens in confirmation, unsubscribe and preference links never
reach a log line.

The links carry their token in the path, and uvicorn's access log prints the path. A
filter on uvicorn's loggers replaces each token segment with `[token]` before any handler
formats the record, whatever the log format. Imports nothing from the package.
"""

from __future__ import annotations

import logging
import re

# The path prefixes whose next segment is a token (see `web.subscriptions`).
TOKEN_PATHS = ("bestaetigen", "abmelden", "einstellungen")
REDACTED = "[token]"
_TOKEN_SEGMENT = re.compile(rf"/({'|'.join(TOKEN_PATHS)})/[^/?#\s\"]+")
_LOGGERS = ("uvicorn.access", "uvicorn.error")


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

"""Conditional and negotiated responses: the HTTP rules the feed route and the page cache
share, on raw header bytes so a cached answer costs no parsing beyond them.

Owns content-coding negotiation (`Accept-Encoding` with q-values, `identity`, `*`), the
compressed variants of a body (gzip and brotli, each with its own ETag: the identity tag
with `-gz` or `-br` inside the quotes, so a cache never mixes them up), `If-None-Match`
(a list, `*`, weak comparison) and `If-Modified-Since` (only without `If-None-Match`, as
RFC 9110 section 13.2.2 orders). Written here rather than taken from Starlette, whose
`GZipMiddleware` compresses every response anew and keeps the identity ETag. Imports
nothing from the package.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache

import brotli
from starlette.types import Scope, Send

IDENTITY = "identity"
# Codings offered, in the server's order of preference when the client likes them equally.
CODINGS = ("br", "gzip")
_SUFFIX = {"br": "-br", "gzip": "-gz"}
# Brotli's best quality takes ~18 ms for 17 KB; beyond this size a faster one is used.
_BROTLI_BEST_UP_TO = 256 * 1024


# Header values up to this length have their parsed meaning cached (a few hundred distinct
# ones at most); longer ones are parsed every time, so a client cannot park megabytes.
_CACHED_UP_TO = 256


def choose_coding(accept_encoding: bytes | None) -> str:
    """The content coding to answer with (see `_choose_coding`); cached for common values."""
    if accept_encoding is not None and len(accept_encoding) > _CACHED_UP_TO:
        return _choose_coding.__wrapped__(accept_encoding)
    return _choose_coding(accept_encoding)


@lru_cache(maxsize=512)
def _choose_coding(accept_encoding: bytes | None) -> str:
    """The content coding to answer with: `br`, `gzip` or `identity`.

    No header: identity. Otherwise the coding with the highest q-value (`x-gzip` is gzip,
    `*` stands for every coding not named); at equal q brotli before gzip before identity.
    Identity that the header does not name is acceptable but least preferred (below any
    coding given a q above 0), as nginx and Apache compress for `gzip;q=0.5`.
    When nothing is acceptable (`identity;q=0` and nothing else), identity all the same:
    a feed reader is better served by the bytes than by 406.
    """
    if accept_encoding is None:
        return IDENTITY
    weights: dict[str, float] = {}
    star: float | None = None
    for part in accept_encoding.decode("latin-1").split(","):
        name, _, parameters = part.partition(";")
        coding = name.strip().lower()
        if not coding:
            continue
        weight = _q_value(parameters)
        if coding == "x-gzip":
            coding = "gzip"
        if coding == "*":
            star = weight
        else:
            weights.setdefault(coding, weight)

    def weight_of(coding: str) -> float:
        if coding in weights:
            return weights[coding]
        if star is not None:
            return star
        return _IMPLICIT_IDENTITY if coding == IDENTITY else 0.0

    offered = [*CODINGS, IDENTITY]
    best = max(offered, key=lambda c: (weight_of(c), -offered.index(c)))
    return best if weight_of(best) > 0 else IDENTITY


# Below the smallest q a header can give (0.001), above "not acceptable" (0).
_IMPLICIT_IDENTITY = 0.0005


def _q_value(parameters: str) -> float:
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def matches_any(if_none_match: bytes, etag: bytes) -> bool:
    """Whether `If-None-Match` matches the quoted `etag`: `*`, or one of its listed tags
    under weak comparison (a `W/` prefix on either side is ignored)."""
    if if_none_match == etag:
        return True
    for candidate in if_none_match.split(b","):
        tag = candidate.strip()
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


def _http_date(value: bytes) -> float | None:
    if len(value) > _CACHED_UP_TO:  # no HTTP date is this long
        return None
    return _cached_http_date(value)


@lru_cache(maxsize=512)
def _cached_http_date(value: bytes) -> float | None:
    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (ValueError, TypeError, IndexError):
        return None


def not_modified(
    if_none_match: bytes | None, if_modified_since: bytes | None, etag: bytes, modified: float
) -> bool:
    """Whether a GET or HEAD is answered 304: by `If-None-Match` when the request has one,
    else by `If-Modified-Since` (`modified` is a Unix time in whole seconds)."""
    if if_none_match is not None:
        return matches_any(if_none_match, etag)
    if if_modified_since is not None:
        since = _http_date(if_modified_since)
        # A date after our clock cannot come from our Last-Modified: no validator.
        return since is not None and modified <= since <= time.time()
    return False


def compress(coding: str, body: bytes) -> bytes:
    """`body` in `coding`, made the same way every time (gzip without a timestamp), so
    replicas that compress the same bytes send the same bytes."""
    if coding == "gzip":
        return gzip.compress(body, compresslevel=9, mtime=0)
    quality = 11 if len(body) <= _BROTLI_BEST_UP_TO else 5
    compressed: bytes = brotli.compress(body, quality=quality)
    return compressed


def http_date(moment: datetime) -> bytes:
    """An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`)."""
    return format_datetime(moment, usegmt=True).encode("ascii")


@dataclass
class Representation:
    """One encoding of a body with its ready-made response headers."""

    body: bytes
    etag: bytes
    ok_headers: list[tuple[bytes, bytes]]
    not_modified_headers: list[tuple[bytes, bytes]]


@dataclass
class Negotiated:
    """A body with its validators, answered in the coding a request prefers; the
    compressed encodings are made when first asked for, then kept."""

    body: bytes
    etag: str  # without quotes, e.g. a content hash
    modified: datetime | None  # None: no Last-Modified (If-Modified-Since never matches)
    media_type: bytes
    cache_control: bytes | None
    last_modified: float = float("inf")
    _representations: dict[str, Representation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modified is not None:
            self.last_modified = float(int(self.modified.timestamp()))

    def representation(self, coding: str) -> Representation:
        found = self._representations.get(coding)
        if found is None:
            found = self._representations[coding] = self._make(coding)
        return found

    def _make(self, coding: str) -> Representation:
        body = self.body if coding == IDENTITY else compress(coding, self.body)
        etag = f'"{self.etag}{_SUFFIX.get(coding, "")}"'.encode("ascii")
        common = [(b"etag", etag)]
        if self.modified is not None:
            common.append((b"last-modified", http_date(self.modified)))
        if self.cache_control is not None:
            common.append((b"cache-control", self.cache_control))
        common.append((b"vary", b"Accept-Encoding"))
        ok = [
            (b"content-type", self.media_type),
            (b"content-length", str(len(body)).encode("ascii")),
            *common,
        ]
        if coding != IDENTITY:
            ok.append((b"content-encoding", coding.encode("ascii")))
        return Representation(body, etag, ok, common)


def request_headers(
    headers: list[tuple[bytes, bytes]],
) -> tuple[bytes | None, bytes | None, bytes | None]:
    """`Accept-Encoding`, `If-None-Match` and `If-Modified-Since` of an ASGI request (ASGI
    gives names in lower case); a header sent twice counts as one comma-separated list."""
    accept = match = since = None
    for name, value in headers:
        if name == b"accept-encoding":
            accept = value if accept is None else accept + b"," + value
        elif name == b"if-none-match":
            match = value if match is None else match + b"," + value
        elif name == b"if-modified-since":
            since = value
    return accept, match, since


async def respond(scope: Scope, send: Send, document: Negotiated) -> int:
    """Answer a GET or HEAD with `document` in the coding the request prefers, 304 when
    its validators match; the status sent."""
    accept, match, since = request_headers(scope["headers"])
    chosen = document.representation(choose_coding(accept))
    if not_modified(match, since, chosen.etag, document.last_modified):
        headers, status, body = chosen.not_modified_headers, 304, b""
    else:
        headers, status = chosen.ok_headers, 200
        body = b"" if scope["method"] == "HEAD" else chosen.body
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status

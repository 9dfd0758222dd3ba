"""Conditional and negotiated responses: what a hostile client's headers may cost."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from service.web.conditional import choose_coding, not_modified


def test_long_header_values_are_not_kept_in_memory():
    """Regression: the parsed `Accept-Encoding` and `If-Modified-Since` values were cached
    by their whole bytes (512 of each), and the server takes headers of any size: distinct
    1 MB headers stayed in memory, 512 MB a header kind."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(40):
            filler = b"x" * 1_000_000 + str(n).encode()
            assert choose_coding(b"gzip, " + filler) == "gzip"
            assert not not_modified(None, filler, b'"tag"', 0.0)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 5_000_000


def test_short_header_values_are_still_answered_alike():
    assert choose_coding(b"gzip;q=0.5, br") == "br"
    assert choose_coding(b"gzip;q=abc, br;q=nan") == "identity"
    assert not_modified(None, b"Sun, 06 Nov 1994 08:49:37 GMT", b'"t"', 784111777.0)
    assert not not_modified(None, b"Sun, 06 Nov 1994 08:49:36 GMT", b'"t"', 784111777.0)


def test_if_modified_since_in_the_future_is_ignored():
    """A date later than the server's clock is no valid validator (it cannot come from our
    Last-Modified): the client gets the full response, as RFC 2616 14.25 put it."""
    future = format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True).encode()
    assert not not_modified(None, future, b'"t"', 784111777.0)
    past = format_datetime(datetime.now(UTC) - timedelta(minutes=1), usegmt=True).encode()
    assert not_modified(None, past, b'"t"', 784111777.0)

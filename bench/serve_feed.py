"""Benchmark: `GET /feeds/artikel.xml` (about 17 KB) from `partnerpost serve`, 200 and 304,
each against nginx serving the identical bytes (its own ETag handling) in the same run.

    .venv/bin/python bench/serve_feed.py [--tiny] [--rounds 3] [--seconds 5]

wrk with 32 connections and 2 threads; rounds alternate nginx and partnerpost. wrk sends
no Accept-Encoding, so both answer the identity body; the ETags it sends are taken from
identity responses and checked to give 304 first (a compressed response's tag, which
differs, would have had partnerpost answer 200 in the 304 rows). Goal (issue 13):
partnerpost reaches at least half of nginx's rate, for 200 and for 304.
Prints one JSON line per row; the last line is the 200 row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.http import (
    nginx,
    partnerpost_serve,
    prepare_store,
    row,
    wait_for_ok,
    wrk,
)

FEED = "/feeds/artikel.xml"
# The demo listing (10 articles) and one more make a main feed of about 17 KB.
EXTRA_ARTICLES = 1
GOAL = "ratio >= 0.5"
IDENTITY = {"Accept-Encoding": "identity"}


def identity_etag(url: str) -> str:
    """The ETag of `url`'s identity body (what wrk is sent), checked to give 304."""
    etag = httpx.get(url, headers=IDENTITY, timeout=10).headers["etag"]
    again = httpx.get(url, headers={**IDENTITY, "If-None-Match": etag}, timeout=10)
    if again.status_code != 304:
        raise RuntimeError(f"{url} answered {again.status_code} to If-None-Match: {etag}")
    return etag


def main(rounds: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        env = prepare_store(folder, EXTRA_ARTICLES)
        with partnerpost_serve(env, folder) as served:
            body = wait_for_ok(served + FEED)
            ours = identity_etag(served + FEED)
            root = folder / "static"
            (root / "feeds").mkdir(parents=True)
            (root / "feeds" / "artikel.xml").write_bytes(body.content)
            with nginx(root, folder) as floor_url:
                wait_for_ok(floor_url + FEED)
                theirs = identity_etag(floor_url + FEED)
                results: dict[str, tuple[list[float], list[float]]] = {
                    "200": ([], []),
                    "304": ([], []),
                }
                for _ in range(rounds):
                    for kind, (values, floors) in results.items():
                        floor_headers = {"If-None-Match": theirs} if kind == "304" else None
                        our_headers = {"If-None-Match": ours} if kind == "304" else None
                        floors.append(wrk(floor_url + FEED, seconds, floor_headers))
                        values.append(wrk(served + FEED, seconds, our_headers))
        size = f"{len(body.content) / 1000:.1f} KB feed, wrk -c32 -t2 -d{seconds:g}s"
        rows = []
        for kind, work in (
            ("304", "serve /feeds/artikel.xml with If-None-Match (304), 32 connections"),
            ("200", "serve /feeds/artikel.xml (200), 32 connections"),
        ):
            values, floors = results[kind]
            result = row("serve_feed", work, values, floors, GOAL, False, size)
            result["met"] = result["ratio"] is not None and float(str(result["ratio"])) >= 0.5
            rows.append(result)
        for result in rows:
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="one short round (for tests)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    arguments = parser.parse_args()
    if arguments.tiny:
        main(1, 1)
    else:
        main(arguments.rounds, arguments.seconds)

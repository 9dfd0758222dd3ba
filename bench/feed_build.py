"""Benchmark: a full feed build of 1,000 entries against feedgen alone, and a rebuild when
nothing changed against the full build.

    .venv/bin/python bench/feed_build.py [--tiny] [--rounds 5] [--entries 1000]

The store is a fresh SQLite file holding `entries` articles (no topics, no municipalities:
the row is about the main feed). The floor is feedgen alone, given the same entries already
in memory, rendering RSS and Atom and writing the two files. The measured run is
`feeds.build_feeds` (query, render RSS + Atom + JSON, write) into an empty feeds folder, then
`build_feeds` again with nothing changed, on one engine (as a running server builds).
Rounds alternate floor and measured run.
Goals (issue 13): full build <= 1.5x the floor; unchanged rebuild < 5 % of a full build.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from feedbench import article_rows, emit, fill, median, settings_for
from feedgen.feed import FeedGenerator

from service import feeds, store
from service.clock import BERLIN

# Where a build records what it was built from (absent before builds recorded it).
_FINGERPRINT_FACT = getattr(feeds, "FINGERPRINT_FACT", "feeds_fingerprint")


def _floor(rows: list[dict[str, Any]], folder: Path) -> float:
    """Seconds feedgen alone takes to render and write RSS + Atom of these entries."""
    started = time.perf_counter()
    generator = FeedGenerator()
    generator.id("https://partnerpost.example.org/feeds/artikel.atom")
    generator.title("Kommunalpartnerschaften mit der Ukraine")
    generator.subtitle("Die neuesten Nachrichten")
    generator.link(href="https://partnerpost.example.org/feeds/artikel.xml", rel="self")
    generator.link(href="https://partnerpost.example.org/", rel="alternate")
    generator.language("de")
    for row in reversed(rows):
        entry = generator.add_entry()
        entry.id(row["guid"])
        entry.title(row["title"])
        entry.link(href=f"https://partnerpost.example.org/artikel/{row['slug']}")
        entry.published(row["published_at"].astimezone(BERLIN))
        entry.updated(row["updated_at"].astimezone(BERLIN))
        entry.summary(row["teaser"])
        entry.content(row["body"], type="html")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "floor.xml").write_bytes(generator.rss_str(pretty=True))
    (folder / "floor.atom").write_bytes(generator.atom_str(pretty=True))
    return time.perf_counter() - started


async def _builds(settings: Any, engine: Any) -> tuple[float, float]:
    """Seconds of a full build into an empty folder, then of a rebuild with nothing changed
    (the engine stays open across rounds, as a running server's does)."""
    sessions = store.session_factory(engine)
    shutil.rmtree(settings.feeds_dir, ignore_errors=True)
    async with sessions() as session, session.begin():
        await store.set_fact(session, _FINGERPRINT_FACT, "{}")  # forget the last build
    started = time.perf_counter()
    await feeds.build_feeds(settings, engine, sessions)
    full = time.perf_counter() - started
    started = time.perf_counter()
    report = await feeds.build_feeds(settings, engine, sessions)
    unchanged = time.perf_counter() - started
    assert report is not None and not report.changed, "nothing changed, yet feeds did"
    return full, unchanged


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--entries", type=int, default=1000)
    args = parser.parse_args()
    entries = 100 if args.tiny else args.entries
    rounds = 1 if args.tiny else args.rounds
    with tempfile.TemporaryDirectory(prefix="feed-build-") as temporary:
        folder = Path(temporary)
        settings = settings_for(folder, feed_size=min(entries, 1000))
        await fill(settings, entries, [], topics=False)
        rows = article_rows(entries, [])
        rows.reverse()  # newest first, as the feed lists them
        _floor(rows, folder / "floor")  # warm-up: imports, first allocations
        engine = store.create_engine(settings.database_url)
        try:
            await _builds(settings, engine)
            floors, fulls, unchanged = [], [], []
            for _ in range(rounds):
                floors.append(_floor(rows, folder / "floor"))
                full, again = await _builds(settings, engine)
                fulls.append(full)
                unchanged.append(again)
        finally:
            await engine.dispose()
    floor, full, again = median(floors), median(fulls), median(unchanged)
    size = f"{entries} entries, RSS+Atom+JSON, SQLite"
    emit(
        {
            "bench": "feed_build",
            "work": "rebuild when nothing changed",
            "value": round(again, 5),
            "unit": "s",
            "floor": round(full, 5),
            "floor_name": "full build of the same feeds",
            "ratio": float(f"{again / full:.3g}"),
            "goal": "ratio < 0.05",
            "met": again / full < 0.05,
            "rounds": rounds,
            "size": size,
        }
    )
    emit(
        {
            "bench": "feed_build",
            "work": "feed build, 1,000 entries, RSS+Atom+JSON",
            "value": round(full, 5),
            "unit": "s",
            "floor": round(floor, 5),
            "floor_name": "feedgen alone, RSS+Atom, same entries",
            "ratio": float(f"{full / floor:.3g}"),
            "goal": "ratio <= 1.5",
            "met": full / floor <= 1.5,
            "rounds": rounds,
            "size": size,
        }
    )


if __name__ == "__main__":
    asyncio.run(main())

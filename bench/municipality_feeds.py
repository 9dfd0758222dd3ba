"""Benchmark: feeds for every subscribed municipality over 10,000 articles: a full build, and
the build after one new article.

    .venv/bin/python bench/municipality_feeds.py [--tiny] [--rounds 3]
        [--municipalities 11000] [--articles 10000]

The store is a fresh SQLite file: `municipalities` municipalities (generated German-sounding
names, some sharing a Ukrainian partner) and `articles` articles, most naming one of them.
Each round builds every feed into an empty folder with a fresh engine (`feeds.build_feeds`:
query, match every municipality's names, render, write), then saves one new article that
names a municipality and builds again. There is no floor: the goals are absolute.
Goals (issue 13): full build < 60 s; the build after a new article < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedbench import emit, fill, median, settings_for

from service import feeds, store

# Where a build records what it was built from (absent before builds recorded it).
_FINGERPRINT_FACT = getattr(feeds, "FINGERPRINT_FACT", "feeds_fingerprint")

_FIRST = "Alt Bad Neu Ober Nieder Groß Klein Hohen Wester Oster Sonnen Wald Berg Rosen".split()
_STEM = "born dorf feld hagen hausen heim kirch bach stein au burg rode leben stedt furt".split()
_PARTNERS = ["Kyjiw", "Irpin", "Lwiw", "Charkiw", "Odesa", "Tscherniwzi", "Butscha", "Poltawa"]


def municipalities(count: int) -> list[tuple[str, str | None]]:
    names = (
        f"{kind} {first}{stem}{'' if n == 0 else f' am {chr(65 + n % 26)}{n}'}"
        for n in itertools.count()
        for kind, first, stem in itertools.product(["Gemeinde", "Stadt"], _FIRST, _STEM)
    )
    return [
        (name, _PARTNERS[i % len(_PARTNERS)] if i % 7 == 0 else None)
        for i, name in zip(range(count), names, strict=False)
    ]


async def _rendering(settings: Any) -> float:
    """Seconds of a full build's own work without writing files: specs (query, matching
    every municipality) and rendering every feed."""
    engine = store.create_engine(settings.database_url)
    try:
        async with store.session_factory(engine)() as session:
            started = time.perf_counter()
            specs = await feeds.feed_specs(settings, session)
            feeds.render_all(settings, specs)
            return time.perf_counter() - started
    finally:
        await engine.dispose()


async def _round(settings: Any, place: str, number: int) -> tuple[float, float, int]:
    """Seconds of a full build, and of the build after one new article naming `place`."""
    shutil.rmtree(settings.feeds_dir, ignore_errors=True)
    engine = store.create_engine(settings.database_url)
    sessions = store.session_factory(engine)
    try:
        async with sessions() as session, session.begin():
            await store.set_fact(session, _FINGERPRINT_FACT, "{}")
        started = time.perf_counter()
        await feeds.build_feeds(settings, engine, sessions)
        full = time.perf_counter() - started
        data = store.ArticleData(
            key=f"new-{number}",
            title=f"Neues aus {place}",
            teaser=f"Besuch in {place} bei der Partnerstadt",
            place=place,
            published_at=datetime(2030, 1, 1, number, tzinfo=UTC),
        )
        async with sessions() as session, session.begin():
            await store.save_article(session, data)
        started = time.perf_counter()
        report = await feeds.build_feeds(settings, engine, sessions)
        incremental = time.perf_counter() - started
        assert report is not None
        return full, incremental, len(report.changed)
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--municipalities", type=int, default=11_000)
    parser.add_argument("--articles", type=int, default=10_000)
    args = parser.parse_args()
    count = 50 if args.tiny else args.municipalities
    articles = 200 if args.tiny else args.articles
    rounds = 1 if args.tiny else args.rounds
    towns = municipalities(count)
    place = towns[len(towns) // 2][0].split(" ", 1)[1]
    fulls, incrementals, renderings, changed = [], [], [], 0
    with tempfile.TemporaryDirectory(prefix="municipality-feeds-") as temporary:
        settings = settings_for(Path(temporary))
        await fill(settings, articles, towns)
        for number in range(rounds):
            renderings.append(await _rendering(settings))
            full, incremental, changed = await _round(settings, place, number)
            fulls.append(full)
            incrementals.append(incremental)
    size = f"{count} municipalities, {articles} articles, SQLite"
    full, incremental = median(fulls), median(incrementals)
    emit(
        {
            "bench": "municipality_feeds",
            "work": "full build without writing files (query, match, render)",
            "value": round(median(renderings), 3),
            "unit": "s",
            "floor": None,
            "floor_name": None,
            "ratio": None,
            "goal": "value < 60 s",
            "met": median(renderings) < 60,
            "rounds": rounds,
            "size": size,
        }
    )
    emit(
        {
            "bench": "municipality_feeds",
            "work": f"build after one new article ({changed} files changed)",
            "value": round(incremental, 4),
            "unit": "s",
            "floor": None,
            "floor_name": None,
            "ratio": None,
            "goal": "value < 1 s",
            "met": incremental < 1,
            "rounds": rounds,
            "size": size,
        }
    )
    emit(
        {
            "bench": "municipality_feeds",
            "work": "municipality feeds over 10,000 articles, full build",
            "value": round(full, 3),
            "unit": "s",
            "floor": None,
            "floor_name": None,
            "ratio": None,
            "goal": "value < 60 s",
            "met": full < 60,
            "rounds": rounds,
            "size": size,
        }
    )


if __name__ == "__main__":
    asyncio.run(main())

"""Benchmark: `partnerpost ingest` of generated NDJSON articles into a fresh SQLite store.

    .venv/bin/python bench/ingest.py [--tiny] [--articles 10000] [--postgresql]

Articles per second of the whole command (start, migrations, parsing, saving, the feed
build it triggers), each round on a new store: a SQLite file, or with `--postgresql` a new
database on the server of PARTNERPOST_TEST_POSTGRES (the tests' admin DSN). The floor, for
reference: the same rows inserted with one plain `executemany` into an empty SQLite table of
the same columns.
Goal (issue 13): at least 5,000 articles/s for 10,000 articles (`--tiny`: 300).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
POSTGRES_ADMIN_DSN = os.environ.get(
    "PARTNERPOST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
GOAL = 5000.0
PLACES = [
    "Leipzig",
    "Borna",
    "Jena",
    "Bonn",
    "Köln",
    "Hamburg",
    "Kyjiw",
    "Lwiw",
    "Charkiw",
    "Odesa",
    "Dnipro",
    "Saporischschja",
]
TOPICS = ["Wiederaufbau", "Energie", "Schulen", "Kultur", "Gesundheit", "Wasser"]
# Floor columns: those of the `articles` table, written as the store writes them.
COLUMNS = (
    "key, guid, slug, title, teaser, body, place, published_at, image_caption, image_url, "
    "source_url, source_id, notify, publication_seq, created_at, updated_at, hidden_at"
)


def articles(count: int) -> list[dict[str, Any]]:
    """`count` distinct articles, about one a day back from 2026, some with topics,
    a body, an image or a source URL, as editors send them."""
    start = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    items = []
    for n in range(count):
        place = PLACES[n % len(PLACES)]
        item: dict[str, Any] = {
            "title": f"Partnerschaft {place}: Bericht Nummer {n} über Hilfe und Austausch",
            "teaser": f"Die Partnerstadt {place} meldet Neuigkeiten ({n}). " * 4,
            "place": place,
            "published": (start - timedelta(hours=7 * n)).isoformat(),
        }
        if n % 3 == 0:
            item["topics"] = [TOPICS[n % len(TOPICS)], TOPICS[(n // 7) % len(TOPICS)]]
        if n % 4 == 0:
            item["body"] = f"<p>Ausführlicher Bericht {n} aus <b>{place}</b>.</p>"
        if n % 5 == 0:
            item["image_url"] = f"https://example.org/bilder/{n}.jpg"
            item["image_caption"] = f"Bild {n} aus {place}"
        if n % 2 == 0:
            item["source_url"] = f"https://example.org/nachrichten/{n}"
        items.append(item)
    return items


def _floor_rows(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC).isoformat()
    return [
        (
            item.get("source_url") or f"key-{n}",
            f"urn:uuid:{uuid.uuid4()}",
            f"slug-{n}",
            item["title"],
            item["teaser"],
            item.get("body"),
            item["place"],
            item["published"],
            item.get("image_caption"),
            item.get("image_url"),
            item.get("source_url"),
            None,
            True,
            None,
            now,
            now,
            None,
        )
        for n, item in enumerate(items)
    ]


def floor_seconds(rows: list[tuple[Any, ...]], folder: Path) -> float:
    """One executemany of the rows into an empty table, committed."""
    connection = sqlite3.connect(folder / "floor.sqlite3")
    connection.execute(
        "CREATE TABLE articles (id INTEGER PRIMARY KEY, key VARCHAR(500) UNIQUE, "
        "guid VARCHAR(64) UNIQUE, slug VARCHAR(120) UNIQUE, title TEXT, teaser TEXT, "
        "body TEXT, place VARCHAR(200), published_at DATETIME, image_caption TEXT, "
        "image_url TEXT, source_url TEXT, source_id BIGINT, notify BOOLEAN, "
        "publication_seq BIGINT UNIQUE, created_at DATETIME, updated_at DATETIME, "
        "hidden_at DATETIME)"
    )
    started = time.perf_counter()
    with connection:
        connection.executemany(
            f"INSERT INTO articles ({COLUMNS}) VALUES ({', '.join('?' * 17)})", rows
        )
    seconds = time.perf_counter() - started
    connection.close()
    return seconds


async def _admin(sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def new_postgresql_database() -> tuple[str, str]:
    """A new, empty PostgreSQL database: its name and URL."""
    name = f"pp_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    server = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return name, f"{server}/{name}"


def ingest_seconds(source: Path, folder: Path, count: int, database_url: str) -> float:
    """`partnerpost ingest SOURCE` into the new store at `database_url`; checks the report."""
    env = {
        **os.environ,
        "PARTNERPOST_DATABASE_URL": database_url,
        "PARTNERPOST_FEEDS_DIR": str(folder / "feeds"),
        "PARTNERPOST_BASE_URL": "http://127.0.0.1:8000",
    }
    started = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "partnerpost"), "ingest", str(source)],
        env=env,
        cwd=folder,
        capture_output=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    expected = f"{count} new, 0 updated, 0 unchanged, 0 rejected".encode()
    if result.returncode != 0 or expected not in result.stdout:
        sys.exit(f"ingest failed: {result.stdout!r} {result.stderr.decode()[-2000:]}")
    return seconds


def main(count: int, rounds: int, postgresql: bool) -> None:
    items = articles(count)
    rows = _floor_rows(items)
    speeds: list[float] = []
    floors: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "articles.ndjson"
        source.write_text(
            "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items),
            encoding="utf-8",
        )
        for n in range(rounds):
            floor_folder = Path(scratch) / f"floor-{n}"
            floor_folder.mkdir()
            floors.append(count / floor_seconds(rows, floor_folder))
            folder = Path(scratch) / f"round-{n}"
            folder.mkdir()
            if not postgresql:
                url = f"sqlite+aiosqlite:///{folder / 'store.sqlite3'}"
                speeds.append(count / ingest_seconds(source, folder, count, url))
                continue
            name, url = new_postgresql_database()
            try:
                speeds.append(count / ingest_seconds(source, folder, count, url))
            finally:
                asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    value = statistics.median(speeds)
    floor = statistics.median(floors)
    print(
        json.dumps(
            {
                "bench": "ingest",
                "work": f"partnerpost ingest of {count:,} articles (NDJSON), "
                + ("PostgreSQL" if postgresql else "SQLite"),
                "value": round(value),
                "unit": "articles/s",
                "floor": round(floor),
                "floor_name": "sqlite3 executemany of the same rows into an empty table",
                "ratio": float(f"{value / floor:.3g}"),
                "goal": f"value >= {GOAL:.0f}",
                "met": value >= GOAL,
                "rounds": rounds,
                "size": f"{count} articles",
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="300 articles, one round.")
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--postgresql", action="store_true", help="Into PostgreSQL (the floor stays SQLite)."
    )
    arguments = parser.parse_args()
    if arguments.tiny:
        main(300, 1, arguments.postgresql)
    else:
        main(arguments.articles, arguments.rounds, arguments.postgresql)

"""What the feed benchmarks share: a fresh SQLite store filled fast, settings, medians."""

from __future__ import annotations

import json
import random
import statistics
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from service import store  # noqa: E402
from service.config import Settings  # noqa: E402

TOPICS = ["Energie", "Wiederaufbau", "Bildung", "Gesundheit", "Kultur", "Wasser"]
WORDS = (
    "Partnerschaft Kommune Hilfe Besuch Delegation Projekt Schule Wasser Energie Stadtrat "
    "Generator Krankenhaus Feuerwehr Spende Austausch Jugend Kultur Wiederaufbau Brücke"
).split()


def settings_for(folder: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{folder / 'store.sqlite3'}",
        "base_url": "https://partnerpost.example.org",
        "feeds_dir": folder / "feeds",
        "admin_token": "bench-admin-token-0123456789abcdef",
        **changes,
    }
    return Settings(_env_file=None, **values)


def article_rows(count: int, places: list[str], seed: int = 7) -> list[dict[str, Any]]:
    """`count` articles with realistic lengths; some mention one of `places`."""
    rng = random.Random(seed)
    start = datetime(2022, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(count):
        place = rng.choice(places) if places and rng.random() < 0.6 else "Berlin"
        words = " ".join(rng.choice(WORDS) for _ in range(40))
        rows.append(
            {
                "id": i + 1,
                "key": f"bench-{i}",
                "guid": store.article_guid(f"bench-{i}"),
                "slug": f"artikel-{i}",
                "title": f"{place}: {' '.join(rng.choice(WORDS) for _ in range(6))} {i}",
                "teaser": f"In {place} {words[:200]}",
                "body": f"<p>{words} {words} & mehr aus {place}.</p>",
                "place": place,
                "published_at": start + timedelta(hours=i),
                "image_caption": "Ein Bild" if i % 3 == 0 else None,
                "image_url": f"https://img.example.org/{i}.jpg" if i % 3 == 0 else None,
                "source_url": None,
                "source_id": None,
                "notify": True,
                "publication_seq": i + 1,
                "created_at": start + timedelta(hours=i),
                "updated_at": start + timedelta(hours=i),
                "hidden_at": None,
            }
        )
    return rows


async def fill(
    settings: Settings,
    articles: int,
    municipalities: list[tuple[str, str | None]],
    *,
    topics: bool = True,
) -> None:
    """A migrated store with `articles` articles (a topic or two each, unless not `topics`)
    and municipalities."""
    engine = store.create_engine(settings.database_url)
    await store.upgrade(engine)
    sessions = store.session_factory(engine)
    names = [name.split(" ", 1)[-1] for name, _ in municipalities]
    rows = article_rows(articles, names)
    tagged = [
        {"article_id": row["id"], "topic": TOPICS[(row["id"] + k) % len(TOPICS)]}
        for row in rows
        for k in range(1 + row["id"] % 2)
        if topics
    ]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    subscribers = [
        {
            "id": i + 1,
            "name": name,
            "slug": f"kommune-{i}-{uuid.uuid4().hex[:6]}",
            "partner": partner,
            "frequency": "weekly",
            "topics": [],
            "created_at": now,
        }
        for i, (name, partner) in enumerate(municipalities)
    ]
    async with sessions() as session, session.begin():
        for start in range(0, len(rows), 2000):
            await session.execute(insert(store.Article), rows[start : start + 2000])
        if tagged:
            await session.execute(insert(store.ArticleTopic), tagged)
        if subscribers:
            await session.execute(insert(store.Subscriber), subscribers)
    await engine.dispose()


def median(values: list[float]) -> float:
    return statistics.median(values)


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row, ensure_ascii=False), flush=True)

"""Many `partnerpost` processes on one SQLite file at once: they wait, they never die."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime

import feedparser
from sqlalchemy import select

from service import store

from .helpers import cli, import_demo, next_monday_8am, run, sqlite_only, subscribe

INGESTS = 8
DIGEST_RUNS = 2
PER_FILE = 4


def _ndjson(number: int) -> str:
    """Articles of their own, plus one every file shares (stored once) and, for pairs of
    files, one they share with their neighbour."""
    items = [
        {"key": f"datei{number}-{i}", "title": f"Meldung {number}.{i}"} for i in range(PER_FILE)
    ]
    items.append({"key": "gemeinsam", "title": "Gemeinsame Meldung"})
    items.append({"key": f"paar{number // 2}", "title": f"Paar {number // 2}"})
    return "\n".join(
        json.dumps(
            {
                **item,
                "teaser": f"Anriss {item['key']}",
                "place": "Bonn",
                "published": "2026-11-20",
                # a topic feed per file: concurrent builds add and prune topic feeds
                "topics": [f"Thema {number}"],
            }
        )
        for item in items
    )


@sqlite_only
async def test_a_burst_of_ingests_and_digest_runs_all_succeed_and_store_each_article_once(
    mail_settings, smtp_server, sessions, tmp_path
):
    await import_demo(sessions)
    emails = [f"stelle{i}@gemeinde.example" for i in range(8)]
    await subscribe(sessions, *emails, frequency="daily")
    files = []
    for number in range(INGESTS):
        path = tmp_path / f"meldungen{number}.ndjson"
        path.write_text(_ndjson(number), encoding="utf-8")
        files.append(path)
    at = next_monday_8am().isoformat(timespec="minutes")

    results = await asyncio.gather(
        *(cli(mail_settings, "ingest", str(path)) for path in files),
        *(cli(mail_settings, "digest", "run", "--at", at) for _ in range(DIGEST_RUNS)),
    )

    for code, out, err in results:
        assert code == 0, f"exit {code}\n{out}\n{err}"
        assert "Traceback" not in err and "locked" not in err
    ingest_lines = [out.strip().splitlines()[-1] for _, out, _ in results[:INGESTS]]
    assert all(line.endswith(", 0 rejected") for line in ingest_lines), ingest_lines
    async with sessions() as session:
        keys = list(await session.scalars(select(store.Article.key)))
    expected = {f"datei{n}-{i}" for n in range(INGESTS) for i in range(PER_FILE)}
    expected |= {"gemeinsam"} | {f"paar{n // 2}" for n in range(INGESTS)}
    assert len(keys) == len(set(keys)) == 10 + len(expected)
    assert expected <= set(keys)
    assert sorted(len(smtp_server.handler.to(email)) for email in emails) == [1] * len(emails)

    feeds_dir = mail_settings.feeds_dir
    assert not [p for p in feeds_dir.rglob(".*") if p.is_file()], "temporary files left"
    for path in feeds_dir.rglob("*.atom"):
        parsed = feedparser.parse(path.read_bytes())
        assert not parsed.bozo, (path, parsed.bozo_exception)
    # The last build saw every import: building again finds nothing to write.
    code, out, _ = await cli(mail_settings, "feeds", "build")
    assert code == 0 and out.startswith("0 written"), out


def _article(key: str) -> store.ArticleData:
    return store.ArticleData(
        key=key,
        title=f"Titel {key}",
        teaser=f"Anriss {key}",
        place="Bonn",
        published_at=datetime(2026, 11, 20, tzinfo=UTC),
    )


@sqlite_only
async def test_a_second_writer_waits_for_the_first_instead_of_inserting_the_same_key(sessions):
    """The driver's deferred BEGIN let a writer read outside its transaction: it missed
    the other's uncommitted article and then failed on the unique key."""
    first_saved, release = asyncio.Event(), asyncio.Event()

    async def first() -> store.SaveOutcome:
        async with sessions() as session, session.begin():
            outcome, _ = await store.save_article(session, _article("gleich"))
            first_saved.set()
            await release.wait()
        return outcome

    async def second() -> store.SaveOutcome:
        async with sessions() as session, session.begin():
            outcome, _ = await store.save_article(session, _article("gleich"))
        return outcome

    one = asyncio.create_task(first())
    await first_saved.wait()
    two = asyncio.create_task(second())
    await asyncio.sleep(0.3)  # lets the second writer reach the lock (no assertion on time)
    release.set()

    assert (await one, await two) == (store.SaveOutcome.CREATED, store.SaveOutcome.UNCHANGED)


@sqlite_only
def test_an_import_that_fails_for_a_database_reason_exits_2_and_rejects_nothing(settings, tmp_path):
    """It used to die with a traceback and exit 1, which reads as "some items rejected"."""
    assert run(settings, "db", "upgrade").returncode == 0
    path = tmp_path / "meldungen.ndjson"
    path.write_text(_ndjson(1), encoding="utf-8")
    database = settings.database_url.removeprefix("sqlite+aiosqlite:///")
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        result = run(
            settings,
            "ingest",
            str(path),
            PARTNERPOST_DATABASE_URL=f"{settings.database_url}?timeout=0.2",
        )
    finally:
        holder.rollback()
        holder.close()

    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "database error" in stderr and "database is locked" in stderr
    assert "Traceback" not in stderr and "rejected" not in result.stdout.decode() + stderr
    retry = run(settings, "ingest", str(path))
    assert retry.returncode == 0 and b"6 new" in retry.stdout


async def test_a_named_lock_excludes_a_second_holder_who_may_wait_for_it(engine):
    """On SQLite the feeds lock used to be a no-op: concurrent builds pruned each other's
    files."""
    async with store.exclusive(engine, "feeds") as first:
        async with store.exclusive(engine, "feeds") as second:
            assert (first, second) == (True, False)
        waiting = asyncio.create_task(_hold_waiting(engine))
        await asyncio.sleep(0.2)
        assert not waiting.done()
    assert await waiting


async def _hold_waiting(engine) -> bool:
    async with store.exclusive(engine, "feeds", wait=True) as got:
        return got

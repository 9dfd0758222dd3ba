"""What is new follows commit order: an article committed late still reaches a digest."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from service import digest, ingest, store

from .helpers import listed_titles, next_monday_8am, run_digests, subscribe


def _articles(prefix: str, count: int, place: str = "Bonn") -> ingest.Parsed:
    lines = [
        json.dumps(
            {
                "key": f"{prefix}-{i}",
                "title": f"{prefix} Nachricht {i}",
                "teaser": f"{prefix} Anriss {i}",
                "place": place,
                "published": "2026-11-20",
            }
        )
        for i in range(count)
    ]
    return ingest.parse_ndjson("\n".join(lines))


async def _subscribe_daily(sessions, email: str) -> None:
    await subscribe(sessions, email, name=f"Gemeinde {email}", frequency="daily")


async def test_articles_of_a_transaction_that_commits_after_a_digest_run_reach_the_next_digest(
    database, mail_settings, smtp_server, engine, sessions
):
    """On PostgreSQL a long import takes ids early and commits late; a digest planned in
    between once moved every mark past those ids, so they reached no digest at all."""
    # 31 articles in one digest: above the default cap, which is not the subject here.
    mail_settings = mail_settings.model_copy(update={"digest_max_articles": 100})
    emails = [f"stelle{i}@gemeinde.example" for i in range(3)]
    for email in emails:
        await _subscribe_daily(sessions, email)
    day = next_monday_8am()
    long_open, release = asyncio.Event(), asyncio.Event()

    async def long_import() -> None:
        async with sessions() as session, session.begin():
            for _line, article in _articles("Lang", 30).articles:
                await store.save_article(session, article.to_data(True))
            long_open.set()
            await release.wait()

    async def small_import_and_digest() -> digest.RunReport:
        await ingest.save(sessions, _articles("Kurz", 1, place="Jena"))
        return await run_digests(mail_settings, sessions, day)

    importer = asyncio.create_task(long_import())
    await long_open.wait()
    meanwhile = asyncio.create_task(small_import_and_digest())
    if database.kind == "postgresql":
        # The race itself: the small import and the run finish while the long one is open.
        first = await meanwhile
        release.set()
        await importer
    else:
        # SQLite serializes writers: the small import waits for the long one.
        release.set()
        await importer
        first = await meanwhile
    second = await run_digests(mail_settings, sessions, day + timedelta(days=1))

    assert first.sent == len(emails)
    expected = sorted([f"Lang Nachricht {i}" for i in range(30)] + ["Kurz Nachricht 0"])
    for email in emails:
        carried = [
            title for received in smtp_server.handler.to(email) for title in listed_titles(received)
        ]
        assert sorted(carried) == expected, email
    if database.kind == "postgresql":
        assert second.sent == len(emails)


async def test_an_edit_of_a_sent_article_is_not_sent_again(
    mail_settings, smtp_server, engine, sessions
):
    await _subscribe_daily(sessions, "a@jena.de")
    await ingest.save(sessions, _articles("Erst", 2))
    day = next_monday_8am()
    await run_digests(mail_settings, sessions, day)

    edited = _articles("Erst", 2)
    fixed = edited.articles[0][1].model_copy(update={"title": "Erst Nachricht 0, korrigiert"})
    edited.articles[0] = (edited.articles[0][0], fixed)
    report = await ingest.save(sessions, edited)
    await ingest.save(sessions, _articles("Neu", 1))
    await run_digests(mail_settings, sessions, day + timedelta(days=1))

    assert report.updated == 1
    first, second = smtp_server.handler.to("a@jena.de")
    assert sorted(listed_titles(first)) == ["Erst Nachricht 0", "Erst Nachricht 1"]
    assert listed_titles(second) == ["Neu Nachricht 0"]
    async with sessions() as session:
        article = await session.scalar(
            store.select(store.Article).where(store.Article.key == "Erst-0")
        )
    assert article is not None and article.title == "Erst Nachricht 0, korrigiert"

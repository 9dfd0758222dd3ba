"""Saving articles many at a time: the same stored articles, slugs and outcomes as saving
them one by one, on both databases, with the edit rule reaching earlier articles of the
same input."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from service import store

from .helpers import BERLIN

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
DAY = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def _data(key: str, title: str = "Bericht", **changes: Any) -> store.ArticleData:
    values: dict[str, Any] = {
        "key": key,
        "title": title,
        "teaser": f"Anriss {key}",
        "place": "Bonn",
        "published_at": DAY,
        **changes,
    }
    return store.ArticleData(**values)


async def _stored(sessions) -> list[tuple[Any, ...]]:
    """Every stored article with what a reader or a digest sees of it, by id."""
    async with sessions() as session:
        articles = await session.scalars(select(store.Article).order_by(store.Article.id))
        return [
            (
                a.id,
                a.key,
                a.guid,
                a.slug,
                a.title,
                a.teaser,
                a.body,
                a.place,
                a.published_at,
                a.image_caption,
                a.image_url,
                a.source_url,
                a.notify,
                tuple(a.topics),
                a.created_at,
                a.updated_at,
            )
            for a in articles
        ]


async def test_a_later_article_of_the_same_input_edits_an_earlier_new_one(sessions):
    first = _data("erst", teaser="Ein Anriss mit Tippfeler")
    fixed = _data("zweit", teaser="Ein Anriss ohne Tippfehler", topics=("Energie",))

    async with sessions() as session, session.begin():
        outcomes = await store.save_articles(session, [first, fixed], NOW)

    assert [outcome for outcome, _ in outcomes] == [
        store.SaveOutcome.CREATED,
        store.SaveOutcome.UPDATED,
    ]
    assert outcomes[0][1] == outcomes[1][1]
    ((_, key, _, slug, _, teaser, *_, topics, _, _),) = await _stored(sessions)
    assert (key, slug, teaser, topics) == ("erst", "bericht", fixed.teaser, ("Energie",))


async def test_entries_kept_apart_are_never_taken_as_edits_of_each_other(sessions):
    first = _data("erst")
    second = _data("zweit")

    async with sessions() as session, session.begin():
        outcomes = await store.save_articles(session, [first, second], NOW, apart={"erst", "zweit"})

    assert [outcome for outcome, _ in outcomes] == [store.SaveOutcome.CREATED] * 2
    assert [row[3] for row in await _stored(sessions)] == ["bericht", "bericht-2"]


async def test_many_new_articles_of_one_title_get_the_next_free_slugs(sessions):
    async with sessions() as session, session.begin():
        await store.save_articles(session, [_data("alt", "Bericht 7")], NOW)
    same_title = [
        _data(f"neu-{n}", published_at=DAY + timedelta(days=n), teaser=f"Teil {n}")
        for n in range(8)
    ]

    async with sessions() as session, session.begin():
        outcomes = await store.save_articles(session, same_title, NOW)

    assert {outcome for outcome, _ in outcomes} == {store.SaveOutcome.CREATED}
    slugs = [row[3] for row in await _stored(sessions)]
    assert slugs == ["bericht-7", "bericht", *(f"bericht-{n}" for n in (2, 3, 4, 5, 6, 8, 9))]


async def test_an_input_larger_than_one_query_batch_saves_and_reimports_unchanged(sessions):
    many = [
        _data(f"k{n}", f"Meldung {n}", published_at=DAY + timedelta(hours=n), topics=("A", "B"))
        for n in range(2500)
    ]
    async with sessions() as session, session.begin():
        first = await store.save_articles(session, many, NOW)
    last = many[-1]
    edited = [
        *many[:-1],
        _data("neu", last.title, published_at=last.published_at, topics=("A", "B")),
    ]

    async with sessions() as session, session.begin():
        again = await store.save_articles(session, edited, NOW + timedelta(hours=1))

    assert {outcome for outcome, _ in first} == {store.SaveOutcome.CREATED}
    assert {outcome for outcome, _ in again[:-1]} == {store.SaveOutcome.UNCHANGED}
    assert again[-1] == (store.SaveOutcome.UPDATED, first[-1][1])
    rows = await _stored(sessions)
    assert len(rows) == 2500
    assert len({row[3] for row in rows}) == 2500
    assert rows[-1][5] == "Anriss neu"
    assert {row[13] for row in rows} == {("A", "B")}


async def test_bulk_saved_rows_hold_the_very_values_sqlalchemy_writes(sessions):
    # Saving hands rows to the driver itself; what it stores must be what an ORM flush
    # stores (on SQLite, the same datetime text), or queries comparing values would miss.
    data = _data("bulk", published_at=DAY.astimezone(BERLIN), notify=False)
    async with sessions() as session, session.begin():
        await store.save_articles(session, [data], NOW)
        session.add(
            store.Article(
                key="orm",
                guid="orm",
                slug="orm",
                title=data.title,
                teaser=data.teaser,
                place=data.place,
                published_at=data.published_at,
                notify=False,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    raw = text(
        "SELECT key, published_at, created_at, updated_at, notify, title FROM articles ORDER BY key"
    )
    async with sessions() as session:
        bulk, orm = (tuple(row)[1:] for row in await session.execute(raw))

    assert bulk == orm


async def test_new_articles_get_their_own_ids_and_topics_when_the_ids_leave_a_gap(sessions):
    # A rolled-back insert uses up PostgreSQL sequence numbers: the new rows' ids no longer
    # follow the largest stored one, and each must still be matched to its article.
    async with sessions() as session, session.begin():
        await store.save_articles(session, [_data("erst", "Erster")], NOW)
    with pytest.raises(LookupError):
        async with sessions() as session, session.begin():
            await store.save_articles(session, [_data("weg", "Weg")], NOW)
            raise LookupError("rolled back")
    given = [
        _data("zweit", "Zweiter", topics=("Energie",)),
        _data("dritt", "Dritter", teaser="Anders", topics=("Schulen", "Kultur")),
    ]

    async with sessions() as session, session.begin():
        outcomes = await store.save_articles(session, given, NOW)

    rows = {row[1]: row for row in await _stored(sessions)}
    assert [id_ for _, id_ in outcomes] == [rows["zweit"][0], rows["dritt"][0]]
    assert rows["zweit"][13] == ("Energie",)
    assert rows["dritt"][13] == ("Kultur", "Schulen")


async def test_the_source_is_recorded_on_the_articles_it_brings_not_on_those_it_edits(sessions):
    async with sessions() as session, session.begin():
        await store.save_articles(session, [_data("alt", teaser="Mit Tippfeler")], NOW)

    async with sessions() as session, session.begin():
        outcomes = await store.save_articles(
            session, [_data("alt", teaser="Ohne Tippfehler"), _data("neu", "Neu")], NOW, source_id=7
        )

    assert [outcome for outcome, _ in outcomes] == [
        store.SaveOutcome.UPDATED,
        store.SaveOutcome.CREATED,
    ]
    async with sessions() as session:
        query = select(store.Article.key, store.Article.source_id)
        sources = {key: source for key, source in await session.execute(query)}
    assert sources == {"alt": None, "neu": 7}


# --- one call or one by one: the same result ----------------------------------------------

# Few values, so that keys, titles, teasers, days and slugs collide often.
KEYS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
TITLES = st.sampled_from(["Bericht", "Bericht 2", "bericht-3", "Bericht!", "Київ", "🇺🇦"])
TEASERS = st.sampled_from(["Anriss", "Anriss!", "Neu"])
# The same instant in two zones, and another day.
TIMES = st.sampled_from([DAY, DAY.astimezone(BERLIN), DAY + timedelta(days=1)])
ARTICLES = st.builds(
    store.ArticleData,
    key=KEYS,
    title=TITLES,
    teaser=TEASERS,
    place=st.sampled_from(["Bonn", "Jena"]),
    published_at=TIMES,
    body=st.sampled_from([None, "<p>Text</p>"]),
    topics=st.lists(st.sampled_from(["Energie", "Schulen"]), max_size=3).map(tuple),
    notify=st.booleans(),
)


async def _save_both_ways(
    template: Path,
    folder: Path,
    before: Sequence[store.ArticleData],
    given_now: Sequence[store.ArticleData],
    apart: bool,
) -> tuple[Any, Any]:
    results = []
    for way in ("together", "one-by-one"):
        path = folder / f"{way}.sqlite3"
        shutil.copy(template, path)
        engine = store.create_engine(f"sqlite+aiosqlite:///{path}")
        sessions = store.session_factory(engine)
        keys = {data.key for data in given_now} if apart else set()
        try:
            async with sessions() as session, session.begin():
                for data in before:
                    await store.save_article(session, data, NOW - timedelta(days=1))
            async with sessions() as session, session.begin():
                if way == "together":
                    saved = await store.save_articles(session, given_now, NOW, apart=keys)
                else:
                    saved = []
                    for data in given_now:
                        outcome, article = await store.save_article(session, data, NOW, apart=keys)
                        saved.append((outcome, article.id))
            results.append((saved, await _stored(sessions)))
        finally:
            await engine.dispose()
    return results[0], results[1]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated store to copy for each example."""
    path = tmp_path_factory.mktemp("saving") / "template.sqlite3"

    async def migrate() -> None:
        engine = store.create_engine(f"sqlite+aiosqlite:///{path}")
        await store.upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return path


@settings(max_examples=150)
@given(
    before=st.lists(ARTICLES, max_size=4),
    given_now=st.lists(ARTICLES, min_size=1, max_size=8),
    apart=st.booleans(),
)
def test_saving_an_input_at_once_equals_saving_it_article_by_article(
    template, tmp_path_factory, before, given_now, apart
):
    folder = tmp_path_factory.mktemp("example")

    together, one_by_one = asyncio.run(_save_both_ways(template, folder, before, given_now, apart))

    assert together == one_by_one

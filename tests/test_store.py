"""Store: schema through migrations, timestamps, slugs, saving articles."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import inspect
from sqlalchemy.exc import StatementError

from service import store

from .helpers import subscribe


def _data(**changes) -> store.ArticleData:
    values = {
        "key": "k1",
        "title": "Städtepartnerschaft Größe Übung",
        "teaser": "Text",
        "place": "Bonn",
        "published_at": datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=1))),
    }
    values.update(changes)
    return store.ArticleData(**values)


async def test_migrations_are_idempotent_and_create_the_schema(engine):
    await store.upgrade(engine)  # a second time: nothing to do, no error
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"articles", "article_topics", "site_facts", "alembic_version"} <= tables


async def test_times_come_back_timezone_aware_and_equal(sessions):
    async with sessions() as session, session.begin():
        _, article = await store.save_article(session, _data())
    async with sessions() as session:
        loaded = await store.article_by_slug(session, article.slug)
    assert loaded.published_at == datetime(2024, 3, 1, 11, 0, tzinfo=UTC)
    assert loaded.published_at.tzinfo is not None


async def test_naive_datetimes_are_refused(sessions):
    with pytest.raises(StatementError, match="naive datetime") as error:
        async with sessions() as session, session.begin():
            await store.save_article(session, _data(published_at=datetime(2024, 3, 1)))
    assert isinstance(error.value.orig, ValueError)


def test_slugs_transliterate_german_and_cut_at_a_word():
    assert store.slugify("Städtepartnerschaft Größe Übung") == "staedtepartnerschaft-groesse-uebung"
    assert store.slugify("„Wir holen die Menschen“") == "wir-holen-die-menschen"
    long = store.slugify("Wort " * 40)
    assert len(long) <= 80 and not long.endswith("-") and long.endswith("wort")
    assert store.slugify("„“") == "artikel"


async def test_same_title_on_another_day_gets_a_distinct_slug(sessions):
    async with sessions() as session, session.begin():
        _, first = await store.save_article(session, _data())
        _, second = await store.save_article(
            session, _data(key="k2", published_at=datetime(2024, 4, 1, tzinfo=UTC), teaser="B")
        )
    assert first.slug == "staedtepartnerschaft-groesse-uebung"
    assert second.slug == "staedtepartnerschaft-groesse-uebung-2"
    assert first.guid != second.guid


async def test_saving_unchanged_data_keeps_updated_at(sessions):
    async with sessions() as session, session.begin():
        outcome, article = await store.save_article(session, _data())
        assert outcome is store.SaveOutcome.CREATED
    later = datetime.now(UTC) + timedelta(hours=1)
    async with sessions() as session, session.begin():
        outcome, again = await store.save_article(session, _data(), now=later)
    assert outcome is store.SaveOutcome.UNCHANGED
    assert again.updated_at == article.updated_at
    async with sessions() as session, session.begin():
        outcome, edited = await store.save_article(session, _data(topics=("Energie",)), now=later)
    assert outcome is store.SaveOutcome.UPDATED
    assert edited.updated_at == later and edited.topics == ["Energie"]


def test_guid_depends_only_on_the_key():
    # Pinned: a changed id makes every feed reader show the article as new.
    assert store.article_guid("a") == "urn:uuid:c70f82e4-de69-5430-90de-5d6f9c0ac09b"
    assert store.article_guid("a") != store.article_guid("b")


@given(st.text(max_size=600))
def test_guid_is_the_uuid5_of_the_key_in_the_article_namespace(key):
    # Spelt out for speed: it must stay the standard name-based UUID, digit for digit.
    expected = uuid.uuid5(store.articles.ARTICLE_ID_NAMESPACE, key)
    assert store.article_guid(key) == f"urn:uuid:{expected}"


async def _ledger(sessions, rows: int) -> store.Period:
    now = datetime.now(UTC)
    period = store.Period(store.Frequency.WEEKLY, now - timedelta(days=7), now)
    emails = [f"a{i}@x.de" for i in range(rows)]
    await subscribe(sessions, *emails, name="Gemeinde", now=now - timedelta(days=1))
    async with sessions() as session, session.begin():
        assert await store.plan_period(session, period, now) == rows
        assert await store.plan_period(session, period, now) == 0  # planned once only
    return period


async def test_claims_never_hand_the_same_row_to_two_workers(sessions):
    await _ledger(sessions, 5)
    now = datetime.now(UTC) + timedelta(seconds=1)
    lease = timedelta(minutes=10)

    async def claim(worker: str) -> list[int]:
        async with sessions() as session, session.begin():
            return await store.claim_deliveries(session, worker, now, 3, lease)

    first, second, third = await claim("w1"), await claim("w2"), await claim("w3")

    assert len(first) == 3 and len(second) == 2 and third == []
    assert not set(first) & set(second)


async def test_expired_claims_are_taken_over_and_released_claims_return(sessions):
    await _ledger(sessions, 2)
    now = datetime.now(UTC) + timedelta(seconds=1)
    lease = timedelta(minutes=10)
    async with sessions() as session, session.begin():
        crashed = await store.claim_deliveries(session, "crashed", now, 10, lease)
    async with sessions() as session, session.begin():
        assert await store.claim_deliveries(session, "w2", now, 10, lease) == []
        later = now + lease + timedelta(seconds=1)
        taken_over = await store.claim_deliveries(session, "w2", later, 10, lease)
    assert taken_over == crashed and len(crashed) == 2
    async with sessions() as session, session.begin():
        assert await store.release_claims(session, ["w2"]) == 2
        assert len(await store.claim_deliveries(session, "w3", now, 10, lease)) == 2


async def test_first_window_starts_at_the_newest_article_stored_a_period_before_confirmation(
    sessions,
):
    confirmed = datetime(2026, 11, 20, 12, tzinfo=UTC)
    period = store.Period(
        store.Frequency.WEEKLY,
        datetime(2026, 11, 16, 6, tzinfo=UTC),
        datetime(2026, 11, 23, 6, tzinfo=UTC),
    )
    # ids 1..3 imported 20, 12 and 5 days before the confirmation
    async with sessions() as session, session.begin():
        for key, days in (("a", 20), ("b", 12), ("c", 5)):
            await store.save_article(
                session,
                _data(key=key, title=key, teaser=key, published_at=confirmed),
                now=confirmed - timedelta(days=days),
            )
    (address,) = await subscribe(sessions, "a@jena.de", name="Stadt Jena", now=confirmed)
    async with sessions() as session, session.begin():
        assert await store.publish_committed(session) == 3

    async with sessions() as session:
        after, upto = await store.next_window(session, address, period, confirmed)

    assert (after, upto) == (2, 3)  # only "c" entered within the week before confirmation

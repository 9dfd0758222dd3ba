"""Polling sources end to end, on SQLite and PostgreSQL, against a real HTTP server on
loopback: backfill, conditional requests, edits, failures, backoff, gone sources, claims."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from service import digest, mailer, store
from service.config import Settings
from service.sources import manage, poller
from service.sources.poller import Outcome, Poller, backoff
from service.store import sources as records

from .feedserver import Reply, item, rss

RSS = "application/rss+xml; charset=utf-8"
EVERY = timedelta(minutes=15)


@pytest.fixture
def source_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"sources_allow_private": True, "sources_timeout_seconds": 1.0}
    )


async def _add(sessions, url: str, name: str = "presse", **extra) -> None:
    data = manage.SourceIn(url=url, name=name, **extra)
    await manage.add(sessions, data, store.utcnow())


async def _poll(settings, sessions, *names: str):
    report = await Poller(settings, sessions).run(list(names) or None)
    return {poll.name: poll for poll in report.polls}


async def _source(sessions, name: str = "presse") -> records.Source:
    async with sessions() as session:
        return await records.get_source(session, name)


async def _subscribe(sessions, name: str, email: str, partner: str) -> None:
    async with sessions() as session, session.begin():
        weekly = store.Frequency.WEEKLY
        municipality = await store.create_subscriber(
            session, name=name, frequency=weekly, partner=partner
        )
        await store.add_address(session, municipality, email, store.AddressStatus.ACTIVE)


async def _digest_titles(settings, sessions, smtp_server) -> list[str]:
    """Run the weekly digest a week ahead; the titles of the one message sent."""
    transport = mailer.create_transport(settings)
    try:
        await digest.DigestRunner(settings, sessions, transport).run(
            store.utcnow() + timedelta(days=8)
        )
    finally:
        await transport.close()
    (received,) = await smtp_server.handler.wait_for(1)
    text = received.message.get_body(("plain",)).get_content()
    return [line[2:] for line in text.splitlines() if line.startswith("* ")]


async def _articles(sessions) -> list[store.Article]:
    async with sessions() as session:
        return list(await store.newest_articles(session, 100))


async def test_first_fetch_is_a_backfill_and_the_second_a_304_that_adds_nothing(
    source_settings, sessions, feed_server
):
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1"), item("Zweiter", "urn:2")), RSS)
    await _add(sessions, feed_server.url("/feed.xml"))

    first = await _poll(source_settings, sessions)
    second = await _poll(source_settings, sessions, "presse")

    assert (first["presse"].outcome, first["presse"].created) == (Outcome.OK, 2)
    assert (second["presse"].outcome, second["presse"].created) == (Outcome.NOT_MODIFIED, 0)
    assert feed_server.seen("/feed.xml")[1].headers["if-none-match"]
    articles = await _articles(sessions)
    assert len(articles) == 2
    assert all(not a.notify for a in articles)  # the backfill reaches no digest
    source = await _source(sessions)
    assert all(a.source_id == source.id for a in articles)
    assert (source.last_status, source.items, source.failures) == (304, 2, 0)
    assert source.next_fetch_at > store.utcnow() + EVERY - timedelta(minutes=1)


async def test_a_source_is_not_fetched_before_it_is_due(source_settings, sessions, feed_server):
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1")), RSS)
    await _add(sessions, feed_server.url("/feed.xml"))

    await _poll(source_settings, sessions)
    again = await _poll(source_settings, sessions)

    assert again == {} and len(feed_server.requests) == 1


async def test_an_edited_entry_updates_its_article(source_settings, sessions, feed_server):
    feed_server.publish("/feed.xml", rss(item("Delegation in Lwiw", "urn:1")), RSS)
    await _add(sessions, feed_server.url("/feed.xml"))
    await _poll(source_settings, sessions)
    (before,) = await _articles(sessions)

    feed_server.publish("/feed.xml", rss(item("Delegation in Lwiw eingetroffen", "urn:1")), RSS)
    polled = await _poll(source_settings, sessions, "presse")

    (after,) = await _articles(sessions)
    assert polled["presse"].updated == 1
    assert (after.id, after.guid, after.key) == (before.id, before.guid, before.key)
    assert after.title == "Delegation in Lwiw eingetroffen"
    assert after.updated_at > before.updated_at


async def test_entries_whose_ids_change_stay_one_article(source_settings, sessions, feed_server):
    feed_server.publish("/feed.xml", rss(item("Spendenlauf für Charkiw", "urn:old:7")), RSS)
    await _add(sessions, feed_server.url("/feed.xml"))
    await _poll(source_settings, sessions)

    feed_server.publish("/feed.xml", rss(item("Spendenlauf für Charkiw", "urn:new:7")), RSS)
    await _poll(source_settings, sessions, "presse")

    assert [a.title for a in await _articles(sessions)] == ["Spendenlauf für Charkiw"]


async def test_a_new_entry_reaches_the_next_digest_and_the_backfill_none(
    mail_settings, smtp_server, engine, sessions, feed_server
):
    settings = mail_settings.model_copy(update={"sources_allow_private": True})
    await _subscribe(sessions, "Stadt Leipzig", "rathaus@leipzig.de", partner="Kyjiw")
    feed_server.publish("/feed.xml", rss(item("Alte Meldung", "urn:1")), RSS)
    await _add(sessions, feed_server.url("/feed.xml"))
    await _poll(settings, sessions)
    feed_server.publish(
        "/feed.xml",
        rss(item("Neue Meldung aus Kyjiw", "urn:2"), item("Alte Meldung", "urn:1")),
        RSS,
    )
    await _poll(settings, sessions, "presse")

    titles = await _digest_titles(settings, sessions, smtp_server)

    assert titles == ["Neue Meldung aus Kyjiw"]


async def test_a_failing_source_backs_off_and_the_others_go_on(
    source_settings, sessions, feed_server
):
    feed_server.script("/broken", Reply(500))
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1")), RSS)
    await _add(sessions, feed_server.url("/broken"), name="kaputt")
    await _add(sessions, feed_server.url("/feed.xml"))

    polls = await _poll(source_settings, sessions)

    assert polls["kaputt"].outcome is Outcome.FAILED and "HTTP 500" in (polls["kaputt"].error or "")
    assert polls["presse"].outcome is Outcome.OK
    broken = await _source(sessions, "kaputt")
    assert (broken.failures, broken.last_status, broken.status) == (1, 500, "active")
    wait = broken.next_fetch_at - (broken.last_fetch_at or store.utcnow())
    assert wait == 2 * EVERY


def test_backoff_doubles_up_to_a_day_and_honours_retry_after():
    assert [backoff(EVERY, n) for n in (1, 2, 3)] == [2 * EVERY, 4 * EVERY, 8 * EVERY]
    assert backoff(EVERY, 30) == timedelta(days=1)
    assert backoff(EVERY, 1, retry_after=7200) == timedelta(hours=2)
    assert backoff(EVERY, 3, retry_after=60) == 8 * EVERY  # never sooner than the backoff
    # Regression: these overflowed timedelta, and the poll failed without a backoff.
    assert backoff(EVERY, 1, retry_after=1e23) == timedelta(days=7)
    assert backoff(timedelta(days=7), 40) == timedelta(days=1)


async def test_retry_after_is_honoured(source_settings, sessions, feed_server):
    feed_server.script("/busy", Reply(429, headers={"Retry-After": "7200"}))
    await _add(sessions, feed_server.url("/busy"))

    await _poll(source_settings, sessions)

    source = await _source(sessions)
    assert source.next_fetch_at - (source.last_fetch_at or store.utcnow()) == timedelta(hours=2)


async def test_404_then_410_marks_the_source_gone_and_it_is_not_polled(
    source_settings, sessions, feed_server
):
    feed_server.script("/moved", Reply(404), Reply(410))
    await _add(sessions, feed_server.url("/moved"))

    first = await _poll(source_settings, sessions, "presse")
    assert (await _source(sessions)).status == "active"
    second = await _poll(source_settings, sessions, "presse")

    source = await _source(sessions)
    assert (first["presse"].outcome, second["presse"].outcome) == (Outcome.FAILED, Outcome.GONE)
    assert (source.status, source.last_status) == ("gone", 410)
    async with sessions() as session:
        assert [s.name for s in await records.failing_sources(session)] == ["presse"]
    async with sessions() as session, session.begin():
        source = await records.get_source(session, "presse")
        source.next_fetch_at = store.utcnow() - timedelta(days=1)
    assert await _poll(source_settings, sessions) == {}


async def test_three_404s_in_a_row_mark_the_source_gone(source_settings, sessions, feed_server):
    await _add(sessions, feed_server.url("/missing"))
    outcomes = [(await _poll(source_settings, sessions, "presse"))["presse"].outcome for _ in "abc"]
    assert outcomes == [Outcome.FAILED, Outcome.FAILED, Outcome.GONE]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(200, b"<rss><channel><item><title>Kaputt</ti", {"Content-Type": RSS}), "XML"),
        (Reply(302, headers={"Location": "/loop"}), "redirect loop"),
        (Reply(200, b"late", delay=2.5), "within 1 s"),
        (Reply(200, b"x" * 5000), "limit of 4096 bytes"),
    ],
    ids=["invalid-xml", "redirect-loop", "slow", "too-big"],
)
async def test_misbehaving_sources_fail_with_the_reason(
    source_settings, sessions, feed_server, reply, error
):
    settings = source_settings.model_copy(update={"sources_max_bytes": 4096})
    feed_server.script("/loop", reply)
    await _add(sessions, feed_server.url("/loop"))

    polls = await _poll(settings, sessions)

    source = await _source(sessions)
    assert polls["presse"].outcome is Outcome.FAILED
    assert error in (source.last_error or "") and source.failures == 1
    assert await _articles(sessions) == []


async def test_latin1_declared_as_utf8_is_read_and_noted(source_settings, sessions, feed_server):
    body = rss(item("Grüße nach Saporischschja", "urn:1")).encode("latin-1")
    feed_server.publish("/feed.xml", body, RSS)
    await _add(sessions, feed_server.url("/feed.xml"))

    await _poll(source_settings, sessions)

    assert [a.title for a in await _articles(sessions)] == ["Grüße nach Saporischschja"]
    assert "windows-1252" in ((await _source(sessions)).last_notes or "")


async def test_rejected_entries_are_listed_on_the_source(source_settings, sessions, feed_server):
    feed_server.publish("/feed.xml", rss("<item><title>Ohne Datum</title></item>"), RSS)
    await _add(sessions, feed_server.url("/feed.xml"))

    polls = await _poll(source_settings, sessions)

    assert polls["presse"].rejected == 1
    assert (await _source(sessions)).last_notes == (
        "entry 1: 'Ohne Datum': rejected: the entry has no date"
    )


async def test_loopback_sources_are_refused_without_the_setting(settings, sessions, feed_server):
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1")), RSS)
    await _add(sessions, feed_server.url("/feed.xml"))

    polls = await _poll(settings, sessions)

    assert polls["presse"].outcome is Outcome.FAILED
    assert "PARTNERPOST_SOURCES_ALLOW_PRIVATE" in (polls["presse"].error or "")
    assert feed_server.requests == []


async def test_two_workers_never_fetch_the_same_source_at_once(
    source_settings, sessions, feed_server
):
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1")), RSS)
    feed_server.delay = 0.3
    await _add(sessions, feed_server.url("/feed.xml"))
    workers = [Poller(source_settings, sessions) for _ in range(3)]

    reports = await asyncio.gather(*(w.run() for w in workers))

    assert sorted(len(r.polls) for r in reports) == [0, 0, 1]
    assert len(feed_server.requests) == 1 and feed_server.most_in_flight == 1


async def test_a_claimed_source_is_skipped_by_an_explicit_poll(
    source_settings, sessions, feed_server
):
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1")), RSS)
    feed_server.delay = 0.3
    await _add(sessions, feed_server.url("/feed.xml"))

    due, named = await asyncio.gather(
        Poller(source_settings, sessions).run(),
        _later(Poller(source_settings, sessions).run(["presse"])),
    )

    assert (len(due.polls), len(named.polls)) == (1, 0)


async def _later(work):
    await asyncio.sleep(0.1)
    return await work


async def test_only_mentioning_keeps_entries_naming_a_word_or_a_partner_town(
    source_settings, sessions, feed_server
):
    await _subscribe(sessions, "Stadt Leipzig", "rathaus@leipzig.de", partner="Kyjiw")
    feed_server.publish(
        "/feed.xml",
        rss(
            item("Neuer Radweg", "urn:1"),
            item("Besuch aus Kyjiw", "urn:2"),
            item("Konzert", "urn:3", description="Gäste aus Odesa"),
        ),
        RSS,
    )
    await _add(sessions, feed_server.url("/feed.xml"), only_mentioning=["Odesa"])

    polls = await _poll(source_settings, sessions)

    assert sorted(a.title for a in await _articles(sessions)) == ["Besuch aus Kyjiw", "Konzert"]
    assert polls["presse"].skipped == 1


async def test_removing_a_source_keeps_its_articles(source_settings, sessions, feed_server):
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1")), RSS)
    await _add(sessions, feed_server.url("/feed.xml"), topics=["Presse"])
    await _poll(source_settings, sessions)

    kept = await manage.remove(sessions, "presse")

    (article,) = await _articles(sessions)
    assert kept == 1 and article.source_id is None and article.topics == ["Presse"]
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(records.Source)) == 0


async def test_entries_of_one_fetch_with_the_same_date_and_teaser_stay_apart(
    source_settings, sessions, feed_server
):
    """Regression: distinct ids of one fetch on the same date with the same description
    were merged by the edit rule into one article that flip-flopped on every fetch."""
    same = {"date": "Mon, 04 Mar 2024 00:00:00 +0100", "description": "Pressemitteilung"}
    feed_server.publish(
        "/feed.xml",
        rss(item("Besuch aus Kyjiw", "urn:1", **same), item("Konzert", "urn:2", **same)),
        RSS,
    )
    await _add(sessions, feed_server.url("/feed.xml"))

    first = await _poll(source_settings, sessions)
    feed_server.publish(
        "/feed.xml",
        rss(item("Besuch aus Kyjiw", "urn:1", **same), item("Konzert", "urn:2", **same), title="x"),
        RSS,
    )
    second = await _poll(source_settings, sessions, "presse")

    assert sorted(a.title for a in await _articles(sessions)) == ["Besuch aus Kyjiw", "Konzert"]
    assert (first["presse"].created, second["presse"].updated) == (2, 0)


async def test_an_unexpected_error_counts_as_a_failure_and_backs_off(
    source_settings, sessions, feed_server, monkeypatch
):
    """Regression: an error the poller did not expect was stored without a failure count
    or a later next fetch, so the same run claimed and fetched the source again, forever."""

    def broken_parser(*args, **kwargs):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(poller, "parse_source", broken_parser)
    feed_server.publish("/feed.xml", rss(item("Erster", "urn:1")), RSS)
    await _add(sessions, feed_server.url("/feed.xml"))

    polls = await asyncio.wait_for(_poll(source_settings, sessions), 10)

    source = await _source(sessions)
    assert polls["presse"].outcome is Outcome.FAILED and len(feed_server.requests) == 1
    assert "parser bug" in (source.last_error or "") and source.failures == 1
    assert source.next_fetch_at - (source.last_fetch_at or store.utcnow()) == 2 * EVERY
    async with sessions() as session:
        assert [s.name for s in await records.failing_sources(session)] == ["presse"]


async def test_a_source_whose_host_does_not_resolve_fails_and_backs_off(source_settings, sessions):
    await _add(sessions, "http://no-such-host.invalid/feed.xml")

    polls = await asyncio.wait_for(_poll(source_settings, sessions), 10)

    source = await _source(sessions)
    assert polls["presse"].outcome is Outcome.FAILED
    assert "cannot resolve" in (source.last_error or "") and source.failures == 1
    assert source.next_fetch_at > store.utcnow() + EVERY

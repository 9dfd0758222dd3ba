"""The console's Zustellungen over real HTTP, with real digest runs against the test SMTP
server; each on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from pydantic import AnyHttpUrl
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import deliveries, operators, store
from service.config import Settings
from service.web import create_app
from service.web.console.deliveries import retry_notice

from .console import EMAIL, PASSWORD
from .console import csrf_of as _csrf
from .console import sign_in as _sign_in
from .helpers import import_demo, next_monday_8am, run_digests, serving, subscribe

PERIODS = "/verwaltung/zustellungen"


@pytest.fixture
def console_settings(mail_settings: Settings) -> Settings:
    """Mail through the test SMTP server; an http base URL (so the client's jar sends the
    session cookie); a retry an hour after a failure, and the retry job ticking hourly, so
    only a retry asked for in the console sends again within a test."""
    return mail_settings.model_copy(
        update={
            "base_url": AnyHttpUrl("http://partnerpost.test"),
            "digest_retry_base_seconds": 3600,
            "digest_retry_seconds": 3600,
            "smtp_pool_size": 1,
        }
    )


@pytest.fixture
async def operator(sessions: async_sessionmaker[AsyncSession]) -> store.Operator:
    async with sessions() as session, session.begin():
        return await operators.add(session, EMAIL, PASSWORD, store.utcnow())


@asynccontextmanager
async def _console(
    settings: Settings, *, signed_in: bool = True
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The real app on a loopback port and a client (signed in as the operator)."""
    app = create_app(settings)
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=30) as http,
    ):
        if signed_in:
            assert (await _sign_in(http, EMAIL, PASSWORD)).status_code == 303
        yield http, app


async def _digests(settings, engine, sessions, *emails: str) -> list[store.HistoryEntry]:
    """Subscribe these addresses (weekly), run next Monday's digests, return the rows."""
    await import_demo(sessions)
    for email in emails:
        await subscribe(sessions, email, name=f"Stadt {email.split('@')[1]}")
    await run_digests(settings, sessions, next_monday_8am())
    return await _entries(sessions)


async def _entries(sessions) -> list[store.HistoryEntry]:
    async with sessions() as session:
        return await store.find_deliveries(session, store.DeliveryFilter(), limit=None)


async def _post(http: httpx.AsyncClient, path: str, **data: str) -> httpx.Response:
    """POST a console form with the session's CSRF token; follow the redirect back."""
    token = _csrf(await http.get(PERIODS))
    answer = await http.post(path, data={"csrf": token, **data})
    assert answer.status_code == 303, answer.text
    return await http.get(answer.headers["location"])


def _period(key: str, action: str = "") -> str:
    return f"{PERIODS}/{quote(key, safe='')}" + (f"/{action}" if action else "")


@pytest.mark.smtp_replies("550")
async def test_a_failed_delivery_is_listed_made_pending_and_then_sent_once(
    console_settings, smtp_server, engine, sessions, operator
):
    (failed,) = await _digests(console_settings, engine, sessions, "rathaus@leipzig.de")
    assert failed.state == "failed"
    async with sessions() as session:
        (summary,) = await store.period_summaries(session)

    async with _console(console_settings) as (http, app):
        # Only the runner below sends: the app's own is stopped.
        await app.state.runtime.runner.stop()
        periods = await http.get(PERIODS)
        page = await http.get(PERIODS, params={"periode": failed.period_key})
        retried = await _post(http, _period(failed.period_key, "erneut"), id=str(failed.id))
        (pending,) = await _entries(sessions)

        await run_digests(console_settings, sessions, next_monday_8am())
        await run_digests(console_settings, sessions, next_monday_8am())
        after = await http.get(_period(failed.period_key))
        again = await _post(http, _period(failed.period_key, "erneut"), id=str(failed.id))
        unknown = await http.get(_period("weekly:2000-01-03T06:00Z"))
        daily = await http.get(PERIODS, params={"rhythmus": "daily"})

    assert periods.status_code == 200 and deliveries.period_label(summary) in periods.text
    assert f"?periode={quote(failed.period_key, safe='')}" in periods.text
    assert page.status_code == 200 and "rathaus@leipzig.de" in page.text
    assert "550 scripted failure" in page.text and "fehlgeschlagen" in page.text
    assert "jetzt erneut versuchen" in page.text
    assert "1 Zustellung wird erneut versucht." in retried.text
    assert "spätestens in 60 Minuten" in retried.text
    assert (pending.state, pending.attempts) == ("pending", 0)
    assert len(smtp_server.handler.to("rathaus@leipzig.de")) == 1
    assert [e.state for e in await _entries(sessions)] == ["sent"]
    assert "Keine fehlgeschlagene oder wartende Zustellung" in after.text
    assert "jetzt erneut versuchen" not in after.text  # a sent row never gets a button
    assert "Bereits versandt; ein Überblick wird nie zweimal verschickt." in again.text
    assert unknown.status_code == 404 and "Ausgabe nicht gefunden" in unknown.text
    assert "Noch keine Ausgabe in diesem Rhythmus." in daily.text


@pytest.mark.smtp_replies("451", "451")
async def test_retrying_a_period_sends_its_waiting_rows_now_once_each(
    console_settings, smtp_server, engine, sessions, operator
):
    rows = await _digests(console_settings, engine, sessions, "rathaus@a.de", "rathaus@b.de")
    assert [e.state for e in rows] == ["retrying", "retrying"]
    key = rows[0].period_key

    async with _console(console_settings) as (http, _):
        page = await http.get(_period(key))
        retried = await _post(http, _period(key, "erneut"), alle="retrying")
        # Nothing else would send before the retry job's next tick, an hour away.
        await smtp_server.handler.wait_for(2)
    await run_digests(console_settings, sessions, next_monday_8am())

    assert page.text.count("wird wiederholt") == 2
    assert "451 scripted failure" in page.text and "alle wartenden erneut versuchen" in page.text
    assert "2 Zustellungen werden erneut versucht." in retried.text
    for email in ("rathaus@a.de", "rathaus@b.de"):
        assert len(smtp_server.handler.to(email)) == 1
    assert [e.state for e in await _entries(sessions)] == ["sent", "sent"]


@pytest.mark.smtp_replies("550", "550")
async def test_retrying_a_periods_failed_rows_names_each_refusal_in_german(
    console_settings, smtp_server, engine, sessions, operator
):
    rows = await _digests(console_settings, engine, sessions, "rathaus@a.de", "rathaus@b.de")
    async with sessions() as session, session.begin():
        address = await session.get(store.Address, rows[1].address_id)
        assert address is not None
        address.status = store.AddressStatus.UNSUBSCRIBED

    async with _console(console_settings) as (http, app):
        await app.state.runtime.runner.stop()
        page = await http.get(_period(rows[0].period_key))
        retried = await _post(http, _period(rows[0].period_key, "erneut"), alle="failed")

    assert "alle fehlgeschlagenen erneut versuchen" in page.text
    assert "1 Zustellung wird erneut versucht." in retried.text
    assert "Nicht erneut versucht: rathaus@b.de: Die Adresse ist nicht aktiv" in retried.text
    assert [e.state for e in await _entries(sessions)] == ["pending", "failed"]


@pytest.mark.smtp_replies("550")
async def test_a_retry_needs_the_forms_csrf_token(
    console_settings, smtp_server, engine, sessions, operator
):
    (failed,) = await _digests(console_settings, engine, sessions, "rathaus@leipzig.de")

    async with _console(console_settings) as (http, _):
        missing = await http.post(_period(failed.period_key, "erneut"), data={"id": str(failed.id)})
        wrong = await http.post(
            _period(failed.period_key, "erneut"), data={"csrf": "x" * 64, "alle": "failed"}
        )

    assert missing.status_code == 403 and wrong.status_code == 403
    assert "Formular abgelaufen" in wrong.text
    assert [e.state for e in await _entries(sessions)] == ["failed"]


@pytest.mark.smtp_replies("550")
async def test_zustellungen_need_a_signed_in_operator(
    console_settings, smtp_server, engine, sessions, operator
):
    (failed,) = await _digests(console_settings, engine, sessions, "rathaus@leipzig.de")

    async with _console(console_settings, signed_in=False) as (http, _):
        page = await http.get(PERIODS, params={"periode": failed.period_key})
        token = _csrf(await http.get("/verwaltung/anmelden"))
        retry = await http.post(
            _period(failed.period_key, "erneut"), data={"csrf": token, "id": str(failed.id)}
        )

    assert page.status_code == 303
    assert re.fullmatch(
        r"/verwaltung/anmelden\?weiter=%2Fverwaltung%2Fzustellungen.*", page.headers["location"]
    )
    assert retry.status_code == 303 and retry.headers["location"] == "/verwaltung/anmelden"
    assert [e.state for e in await _entries(sessions)] == ["failed"]


def test_the_retry_notice_counts_in_german_and_names_a_few_refusals():
    refused = [
        deliveries.Refusal(i, deliveries.Reason.SENT, f"rathaus@{i}.de") for i in range(1, 6)
    ]
    report = deliveries.RetryReport(retried=[7, 8], already_due=[9], refused=refused)

    notice = retry_notice(report, 60)

    assert notice.startswith(
        "2 Zustellungen werden erneut versucht. 1 Zustellung war schon zum Versand vorgesehen. "
        "Der Versand beginnt gleich (spätestens in 60 Sekunden)."
    )
    assert notice.count("Nicht erneut versucht:") == 3 and notice.endswith("… und 2 weitere.")
    empty = retry_notice(deliveries.RetryReport(), 60)
    assert empty == "Keine Zustellung wartet auf einen neuen Versuch."

"""The console's sign-in, sessions and CSRF over real HTTP, and `partnerpost operators`
as a real subprocess; each on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import digest, operators, store
from service.config import Settings

from .console import EMAIL, PASSWORD, console_client
from .console import csrf_of as _csrf
from .console import sign_in as _sign_in
from .helpers import running_app

PARTNERPOST = str(Path(sys.executable).parent / "partnerpost")


@pytest.fixture
def plain_settings(settings: Settings) -> Settings:
    """The test settings with an http base URL: the client's cookie jar then sends the
    session cookie to the loopback server (it keeps Secure cookies for https)."""
    return Settings(
        _env_file=None,
        database_url=settings.database_url,
        base_url="http://partnerpost.test",
        feeds_dir=settings.feeds_dir,
    )


@pytest.fixture
async def operator(sessions: async_sessionmaker[AsyncSession]) -> store.Operator:
    async with sessions() as session, session.begin():
        return await operators.add(session, EMAIL, PASSWORD, store.utcnow())


@pytest.fixture
async def client(
    plain_settings: Settings, operator: store.Operator
) -> AsyncIterator[httpx.AsyncClient]:
    async with console_client(plain_settings) as http:
        yield http


async def test_console_redirects_to_sign_in_when_not_signed_in(client):
    answer = await client.get("/verwaltung/?x=1")

    assert answer.status_code == 303
    assert answer.headers["location"] == "/verwaltung/anmelden?weiter=%2Fverwaltung%2F%3Fx%3D1"


async def test_wrong_password_gets_the_generic_message_and_no_session(client):
    wrong = await _sign_in(client, EMAIL, "falsches-passwort-123")
    unknown = await _sign_in(client, "niemand@agentur.example", PASSWORD)

    for answer in (wrong, unknown):
        assert answer.status_code == 403
        assert "E-Mail-Adresse oder Passwort falsch" in answer.text
    assert (await client.get("/verwaltung/")).status_code == 303


async def test_right_password_signs_in_and_shows_the_overview(client, sessions):
    answer = await _sign_in(client, EMAIL.upper(), PASSWORD)
    overview = await client.get("/verwaltung/")

    assert answer.status_code == 303 and answer.headers["location"] == "/verwaltung/"
    assert overview.status_code == 200
    assert "Nächste Ausgaben" in overview.text and "Wöchentlich" in overview.text
    assert 'aria-current="page"' in overview.text and "Abmelden" in overview.text
    for name, value in {
        "cache-control": "no-store",
        "x-frame-options": "DENY",
        "referrer-policy": "same-origin",
    }.items():
        assert overview.headers[name] == value
    assert "frame-ancestors 'none'" in overview.headers["content-security-policy"]
    async with sessions() as session:
        stored = await store.operator_by_email(session, EMAIL)
    assert stored is not None and stored.last_sign_in_at is not None


async def test_sign_in_goes_back_to_the_page_asked_for_but_never_off_site(client):
    async def sign_in_to(back_to: str) -> str:
        token = _csrf(await client.get("/verwaltung/anmelden"))
        data = {"csrf": token, "email": EMAIL, "password": PASSWORD, "weiter": back_to}
        answer = await client.post("/verwaltung/anmelden", data=data)
        client.cookies.clear()
        return answer.headers["location"]

    assert await sign_in_to("/verwaltung/x?y=1") == "/verwaltung/x?y=1"
    assert await sign_in_to("//evil.example/") == "/verwaltung/"
    assert await sign_in_to("https://evil.example/verwaltung/") == "/verwaltung/"


async def test_session_cookie_flags_without_https(client):
    answer = await _sign_in(client, EMAIL, PASSWORD)

    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/verwaltung" in cookie
    assert "secure" not in cookie


async def test_session_cookie_is_secure_with_an_https_base_url(settings, operator):
    assert settings.public_url.startswith("https://")
    async with (
        running_app(settings) as url,
        httpx.AsyncClient(base_url=url, follow_redirects=False) as http,
    ):
        # The client's jar keeps Secure cookies from plain http, so they go by hand.
        form = await http.get("/verwaltung/anmelden")
        anonymous = form.headers["set-cookie"].split(";")[0]
        data = {"csrf": _csrf(form), "email": EMAIL, "password": PASSWORD}
        answer = await http.post("/verwaltung/anmelden", data=data, headers={"cookie": anonymous})
        signed_in = answer.headers["set-cookie"].split(";")[0]
        overview = await http.get("/verwaltung/", headers={"cookie": signed_in})

    assert "secure" in form.headers["set-cookie"].lower()
    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower()
    assert overview.status_code == 200


async def test_form_without_or_with_a_wrong_csrf_token_is_refused(client):
    await _sign_in(client, EMAIL, PASSWORD)

    missing = await client.post("/verwaltung/abmelden", data={})
    wrong = await client.post("/verwaltung/abmelden", data={"csrf": "0" * 64})
    sign_in = await client.post("/verwaltung/anmelden", data={"email": EMAIL, "password": PASSWORD})

    for answer in (missing, wrong, sign_in):
        assert answer.status_code == 403
        assert "Formular abgelaufen" in answer.text
    assert (await client.get("/verwaltung/")).status_code == 200


async def test_sign_out_ends_the_session_even_for_a_copied_cookie(client):
    await _sign_in(client, EMAIL, PASSWORD)
    overview = await client.get("/verwaltung/")
    copied = "; ".join(f"{name}={value}" for name, value in client.cookies.items())

    out = await client.post("/verwaltung/abmelden", data={"csrf": _csrf(overview)})
    page = await client.get(out.headers["location"])
    client.cookies.clear()
    replayed = await client.get("/verwaltung/", headers={"cookie": copied})

    assert out.status_code == 303
    assert "Sie haben sich abgemeldet" in page.text
    assert replayed.status_code == 303


async def test_removing_an_operator_ends_their_session(client, sessions):
    await _sign_in(client, EMAIL, PASSWORD)
    assert (await client.get("/verwaltung/")).status_code == 200

    async with sessions() as session, session.begin():
        await store.remove_operator(session, EMAIL)

    assert (await client.get("/verwaltung/")).status_code == 303


async def test_sign_in_is_limited_after_five_failures_for_one_email(client):
    for _ in range(operators.LIMITS.per_account):
        assert (await _sign_in(client, EMAIL, "falsches-passwort-123")).status_code == 403

    limited = await _sign_in(client, EMAIL, PASSWORD)

    assert limited.status_code == 429
    assert "Zu viele fehlgeschlagene Anmeldeversuche" in limited.text
    assert int(limited.headers["retry-after"]) > 0
    assert (await client.get("/verwaltung/")).status_code == 303


async def test_sign_in_is_limited_per_client_across_emails(client):
    for n in range(operators.LIMITS.per_client):
        assert (await _sign_in(client, f"n{n}@agentur.example", PASSWORD)).status_code == 403

    assert (await _sign_in(client, EMAIL, PASSWORD)).status_code == 429


# --- the command line ---------------------------------------------------------------------


def _cli(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PARTNERPOST, *args],
        env={
            "PATH": "/usr/bin:/bin",
            "PARTNERPOST_DATABASE_URL": settings.database_url,
            "PARTNERPOST_BASE_URL": settings.public_url,
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.feeds_dir.parent,
    )


async def test_operators_add_list_remove_on_the_command_line(settings, engine, sessions):
    added = _cli(
        settings,
        "operators",
        "add",
        "Chefin@Agentur.example",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    twice = _cli(
        settings,
        "operators",
        "add",
        "chefin@agentur.example",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    short = _cli(
        settings, "operators", "add", "kurz@agentur.example", "--password-stdin", stdin="kurz\n"
    )
    invalid = _cli(
        settings, "operators", "add", "keine-adresse", "--password-stdin", stdin=PASSWORD
    )
    listed = _cli(settings, "operators", "list")
    removed = _cli(settings, "operators", "remove", "chefin@agentur.example")
    unknown = _cli(settings, "operators", "remove", "chefin@agentur.example")
    empty = _cli(settings, "operators", "list")

    assert added.returncode == 0, added.stderr
    assert "operator chefin@agentur.example added" in added.stdout
    assert "/verwaltung/anmelden" in added.stdout
    assert twice.returncode == 2 and "exists already" in twice.stderr
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    assert invalid.returncode == 1 and "not a valid address" in invalid.stderr
    assert listed.returncode == 0 and "chefin@agentur.example" in listed.stdout
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert unknown.returncode == 2 and "no operator" in unknown.stderr
    assert "no operators" in empty.stdout
    async with sessions() as session:
        assert await store.all_operators(session) == []


async def test_operator_added_on_the_command_line_can_sign_in(settings, engine, plain_settings):
    added = _cli(settings, "operators", "add", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr

    async with (
        running_app(plain_settings) as url,
        httpx.AsyncClient(base_url=url, follow_redirects=False) as http,
    ):
        answer = await _sign_in(http, EMAIL, PASSWORD)

    assert answer.status_code == 303


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_operators_add_asks_twice_and_refuses_different_passwords(settings, engine):
    # Without a terminal the hidden prompt reads standard input.
    differ = _cli(settings, "operators", "add", EMAIL, stdin=f"{PASSWORD}\nanderes-passwort-1\n")
    same = _cli(settings, "operators", "add", EMAIL, stdin=f"{PASSWORD}\n{PASSWORD}\n")

    assert differ.returncode == 1 and "differ" in differ.stderr
    assert same.returncode == 0, same.stderr


async def test_overview_shows_runs_failing_sources_and_failed_addresses(client, sessions):
    now = store.utcnow()
    period = store.Period(store.Frequency.WEEKLY, now - timedelta(days=7), now - timedelta(hours=1))
    async with sessions() as session, session.begin():
        town = await store.create_subscriber(
            session, name="Stadt Borna", frequency=store.Frequency.WEEKLY
        )
        for email in ("ok@borna.example", "weg@borna.example"):
            await store.add_address(
                session, town, email, store.AddressStatus.ACTIVE, now - timedelta(days=30)
            )
        assert await store.plan_period(session, period, now) == 2
        rows = await store.due_deliveries(session, now)
        rows[0][0].status = store.DeliveryStatus.SENT
        rows[1][0].status = store.DeliveryStatus.FAILED
        rows[1][0].last_reply = "550 5.1.1 mailbox unknown"
        source = await store.sources.add_source(
            session,
            name="presse",
            url="https://presse.example/feed",
            fmt="rss",
            every=timedelta(minutes=15),
            now=now,
        )
        source.failures, source.last_error = 2, "Connect call failed"
    await _sign_in(client, EMAIL, PASSWORD)

    page = (await client.get("/verwaltung/")).text

    assert digest.period_label(period) in page
    assert re.search(
        r'class="number">1</td>\s*<td class="number">0</td>\s*<td class="number">1</td>', page
    )
    assert "presse" in page and "Connect call failed" in page
    assert "weg@borna.example" in page and "550 5.1.1 mailbox unknown" in page
    assert "ok@borna.example" not in page

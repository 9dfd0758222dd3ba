"""What people see, in a real browser: the subscription flow from the form to the last
unsubscribe, the console's sign-in and sign-out, and every page at a phone's and a
laptop's width (fits the screen, no console error, no serious axe violation, a
screenshot in var/screenshots/ to look at).

SQLite only: the browser is the subject here. A page that the app gains goes into
`PUBLIC_SCREENS` or `CONSOLE_SCREENS` (with what it needs in `Site.values`); a new flow
gets its own test that signs in with `sign_in`.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import digest, ingest, mailer, operators, store, subscribers
from service.config import Settings
from service.web import create_app

from .browser import HEIGHT, WIDTHS, Operator, Watch, check_page, sign_in
from .helpers import ADMIN_TOKEN, DEMO, RecordingHandler, serving, smtp_relay, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The demo articles have no topics; this one gives the topic page something to show.
WITH_TOPICS = {
    "title": "Stadtwerke Leipzig liefern Generatoren nach Kyjiw",
    "teaser": "Zwölf Notstromaggregate für Schulen und Krankenhäuser der Partnerstadt.",
    "place": "Leipzig",
    "published": "2025-01-15",
    "topics": ["Energie", "Wärme & Wasser"],
}
EDITOR = Operator("redaktion@agentur.example", "richtig-langes-passwort")


class Screen(NamedTuple):
    """A page to check: its path (with `{fields}` from `Site.values`), the status it
    answers with, and whether it needs a signed-in operator."""

    name: str
    path: str
    status: int = 200
    signed_in: bool = False


PUBLIC_SCREENS = [
    Screen("startseite", "/"),
    Screen("artikel", "/artikel/{article}"),
    Screen("thema", "/themen/{topic}"),
    Screen("abonnieren", "/abonnieren"),
    Screen("datenschutz", "/datenschutz"),
    Screen("impressum", "/impressum"),
    Screen("bestaetigen", "/bestaetigen/{confirm_token}"),
    Screen("abmelden", "/abmelden/{unsubscribe_token}"),
    Screen("einstellungen", "/einstellungen/{preferences_token}"),
    Screen("ungueltiger-link", "/abmelden/ungueltig", status=400),
    Screen("artikel-fehlt", "/artikel/gibt-es-nicht", status=404),
    Screen("unbekannter-pfad", "/gibt-es-nicht", status=404),
    Screen("archiv", "/archiv"),
    Screen("archiv-ausgabe", "/{archive_page}"),
]
CONSOLE_SCREENS = [
    Screen("verwaltung-anmelden", "/verwaltung/anmelden"),
    Screen("verwaltung-uebersicht", "/verwaltung/", signed_in=True),
    Screen("verwaltung-kommunen", "/verwaltung/kommunen", signed_in=True),
    Screen("verwaltung-kommune-neu", "/verwaltung/kommunen/neu", signed_in=True),
    Screen("verwaltung-kommunen-import", "/verwaltung/kommunen/import", signed_in=True),
    Screen("verwaltung-adresse", "/verwaltung/kommunen/adresse/{address_id}", signed_in=True),
    Screen(
        "verwaltung-adresse-bearbeiten",
        "/verwaltung/kommunen/adresse/{address_id}/bearbeiten",
        signed_in=True,
    ),
    Screen(
        "verwaltung-adresse-entfernen",
        "/verwaltung/kommunen/adresse/{address_id}/entfernen",
        signed_in=True,
    ),
    Screen("verwaltung-zustellungen", "/verwaltung/zustellungen", signed_in=True),
    Screen("verwaltung-ausgabe", "/verwaltung/zustellungen?periode={period_key}", signed_in=True),
    Screen("verwaltung-beitraege", "/verwaltung/beitraege", signed_in=True),
    Screen("verwaltung-beitrag", "/verwaltung/beitraege/{article_id}", signed_in=True),
    Screen("verwaltung-vorschau", "/verwaltung/vorschau", signed_in=True),
    Screen(
        "verwaltung-vorschau-kommune",
        "/verwaltung/vorschau?kommune={subscriber_id}",
        signed_in=True,
    ),
]


@dataclass
class Site:
    """The real app on a loopback port its own base URL names (so the absolute links and
    form actions in its pages and mails lead back to it), with an SMTP relay."""

    url: str
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    relay: RecordingHandler
    values: dict[str, str] = field(default_factory=dict)
    console_cookies: list[Any] = field(default_factory=list)

    async def run_digests(self, at: datetime) -> digest.RunReport:
        transport = mailer.create_transport(self.settings)
        try:
            return await digest.DigestRunner(self.settings, self.sessions, transport).run(at)
        finally:
            await transport.close()


@asynccontextmanager
async def running_site(folder: Path, replies: Sequence[str] = ()) -> AsyncIterator[Site]:
    """A site with the demo articles and the operator `EDITOR`; its relay answers the
    messages with `replies` first (see `RecordingHandler`), then accepts them."""
    listening = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listening.getsockname()[1]}"
    async with smtp_relay(list(replies)) as relay:
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite+aiosqlite:///{folder / 'store.sqlite3'}",
            base_url=url,
            feeds_dir=folder / "feeds",
            admin_token=ADMIN_TOKEN,
            mailer="smtp",
            smtp_host=relay.host,
            smtp_port=relay.port,
            smtp_timeout=5,
            mail_from="Kommunalpartnerschaften Ukraine <news@partnerpost.example.org>",
            secret_key=SecretStr("test-secret-key-0123456789abcdefghijkl"),
            digest_retry_base_seconds=0,
        )
        engine = store.create_engine(settings.database_url)
        await store.upgrade(engine)
        sessions = store.session_factory(engine)
        await ingest.save(sessions, ingest.parse_listing_text(DEMO.read_text(encoding="utf-8")))
        await ingest.save(sessions, ingest.parse_json(json.dumps([WITH_TOPICS])))
        async with sessions() as session, session.begin():
            await operators.add(session, EDITOR.email, EDITOR.password, store.utcnow())
        try:
            async with serving(create_app(settings), listening):
                yield Site(url, settings, sessions, relay.handler)
        finally:
            await engine.dispose()


async def _digest_reaches(site: Site, at: datetime, address: str, messages: int) -> None:
    """Plan and send the digests due at `at`; the one for `address` reaches the relay as its
    `messages`-th message. This run or the running app's own sender, which may claim the
    planned row first, sends it."""
    report = await site.run_digests(at)
    assert report.planned == 1, report
    await wait_until(
        lambda: len(site.relay.to(address)) == messages, 30, 0.1, what=f"a digest to {address}"
    )


async def _fill_values(site: Site) -> None:
    """What the pages in the screen lists need: an article, a topic, signed links for a
    pending and for an active address, and a digest run for the overview."""
    tokens = subscribers.Tokens(site.settings)
    now = store.utcnow()
    await subscribers.request_subscription(
        site.settings,
        site.sessions,
        subscribers.SubscriberIn(name="Stadt Borna", email="rathaus@borna.example"),
        "browser-test",
        now,
    )
    async with site.sessions() as session, session.begin():
        (article,) = await store.newest_articles(session, 1)
        topic_slugs = await store.topic_slugs(session)
        record = await session.scalar(store.select(store.Consent).order_by(store.Consent.id))
        assert record is not None
        leipzig = await store.create_subscriber(
            session, name="Stadt Leipzig", frequency=store.Frequency.WEEKLY, partner="Kyjiw"
        )
        active = await store.add_address(
            session, leipzig, "rathaus@leipzig.example", store.AddressStatus.ACTIVE
        )
        site.values.update(
            article=article.slug,
            topic=topic_slugs["Wärme & Wasser"],
            confirm_token=tokens.confirm(record),
            unsubscribe_token=tokens.unsubscribe(active),
            preferences_token=tokens.preferences(active),
        )
    at = datetime.now(UTC) + timedelta(days=7)
    await _digest_reaches(site, at, "rathaus@leipzig.example", 1)
    week = digest.latest_period(site.settings, store.Frequency.WEEKLY, at)
    site.values.update(
        article_id=str(article.id),
        address_id=str(active.id),
        subscriber_id=str(leipzig.id),
        archive_page=digest.archive_path(week),
        period_key=week.key,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> AsyncIterator[Site]:
    """One site for the page checks, with `EDITOR` signed in once (`console_cookies`)."""
    async with running_site(tmp_path_factory.mktemp("site")) as site:
        await _fill_values(site)
        context = await browser.new_context()
        await sign_in(await context.new_page(), site.url, EDITOR)
        site.console_cookies = await context.cookies()
        await context.close()
        yield site


@pytest_asyncio.fixture(loop_scope="session")
async def own_site(tmp_path: Path) -> AsyncIterator[Site]:
    """A site of the test's own, for a flow that counts mails or ends sessions."""
    async with running_site(tmp_path) as site:
        yield site


def _link(mail_text: str, site: Site, path: str) -> str:
    (link,) = set(re.findall(rf"{re.escape(site.url)}/{path}/\S+", mail_text))
    return link


async def test_subscribe_confirm_receive_and_unsubscribe_in_the_browser(own_site, page):
    site, address = own_site, "rathaus@leipzig.example"
    await page.goto(f"{site.url}/abonnieren")
    await page.get_by_label("Kommune", exact=True).fill("Stadt Leipzig")
    await page.get_by_label("E-Mail-Adresse").fill(address)
    await page.get_by_label("Ukrainische Partnerkommune").fill("Kyjiw")
    await page.get_by_role("button", name="Abonnieren").click()
    await page.get_by_role("heading", name="Bitte prüfen Sie Ihr Postfach").wait_for()

    (confirmation,) = await site.relay.wait_for(1)
    text = confirmation.message.get_body(("plain",)).get_content()
    await page.goto(_link(text, site, "bestaetigen"))
    await page.get_by_role("button", name="Ja, Abonnement bestätigen").click()
    await page.get_by_role("heading", name="Abonnement bestätigt").wait_for()

    at = datetime.now(UTC) + timedelta(days=7)
    await _digest_reaches(site, at, address, 2)
    (received,) = [r for r in site.relay.to(address) if r is not confirmation]
    text = received.message.get_body(("plain",)).get_content()
    await page.goto(_link(text, site, "abmelden"))
    await page.get_by_role("button", name="Jetzt abmelden").click()
    await page.get_by_role("heading", name="Sie sind abgemeldet").wait_for()

    news = '{"title": "Neu", "teaser": "Neu", "place": "Leipzig", "published": "2026-12-01"}'
    await ingest.save(site.sessions, ingest.parse_json(news))
    assert (await site.run_digests(at + timedelta(days=7))).sent == 0
    assert len(site.relay.to(address)) == 2


async def test_console_sign_in_shows_the_overview_and_sign_out_ends_it(own_site, page):
    site = own_site
    await sign_in(page, site.url, EDITOR)
    await page.get_by_role("heading", name="Übersicht", level=1).wait_for()
    await page.get_by_role("heading", name="Nächste Ausgaben").wait_for()

    await page.get_by_role("button", name="Abmelden").click()
    await page.wait_for_url(f"{site.url}/verwaltung/anmelden")
    await page.get_by_text("Sie haben sich abgemeldet.").wait_for()
    await page.goto(f"{site.url}/verwaltung/")
    assert page.url.startswith(f"{site.url}/verwaltung/anmelden?weiter=")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("screen", PUBLIC_SCREENS + CONSOLE_SCREENS, ids=lambda s: s.name)
async def test_page_fits_the_screen_and_has_no_serious_accessibility_problem(
    site: Site, page: Page, watch: Watch, screen: Screen, width: int
):
    url = site.url + screen.path.format(**site.values)
    if screen.signed_in:
        await page.context.add_cookies(site.console_cookies)
    if screen.status != 200:
        watch.expect_status(url, screen.status)

    answer = await page.goto(url)

    assert answer is not None and answer.status == screen.status
    assert page.url == url
    assert page.viewport_size == {"width": width, "height": HEIGHT}
    # Colours do not change with the width: the slow contrast rule runs at the widest only.
    await check_page(page, screen.name, contrast=width == max(WIDTHS))


CSV_IMPORT = (
    "name,email,ags,bundesland,partner,frequency,topics\n"
    "Stadt Borna,rathaus@borna.example,14729050,Sachsen,Irpin,weekly,\n"
    "Stadt Kaputt,nicht-gueltig,,,,,\n"
)


async def test_an_editor_works_through_the_console_in_the_browser(page, tmp_path):
    """Sign in, import a CSV, open an address's history, retry its failed digest, edit and
    hide an article, preview a digest, open the archive, sign out: as an editor clicks."""
    async with running_site(tmp_path, replies=["550"]) as site:
        await _work_through_the_console(site, page, tmp_path)


async def _work_through_the_console(site: Site, page: Page, tmp_path: Path) -> None:
    await sign_in(page, site.url, EDITOR)

    await page.get_by_role("link", name="Kommunen", exact=True).first.click()
    await page.get_by_role("link", name="CSV importieren").click()
    csv_file = tmp_path / "kommunen.csv"
    csv_file.write_text(CSV_IMPORT, encoding="utf-8")
    await page.get_by_label("CSV-Datei (UTF-8 oder Excel-CSV)").set_input_files(csv_file)
    await page.get_by_role("button", name="Importieren").click()
    report = page.locator("main")
    await page.get_by_role("heading", name="Ergebnis für kommunen.csv").wait_for()
    text = await report.inner_text()
    assert "1 hinzugefügt" in text and "bitte eine gültige Adresse angeben" in text

    await page.goto(f"{site.url}/verwaltung/kommunen")
    await page.get_by_role("link", name="rathaus@borna.example").click()
    await page.get_by_role("heading", name="Zustellungen").wait_for()
    await page.get_by_role("heading", name="Einwilligung").wait_for()

    at = datetime.now(UTC) + timedelta(days=7)
    assert (await site.run_digests(at)).failed == 1  # the relay refuses the first with 550
    await page.get_by_role("link", name="Zustellungen", exact=True).first.click()
    week = digest.latest_period(site.settings, store.Frequency.WEEKLY, at)
    await page.get_by_role("link", name=digest.period_label(week)).first.click()
    retry = "jetzt erneut versuchen für rathaus@borna.example"
    await page.get_by_role("button", name=retry).click()
    await page.get_by_role("status").first.wait_for()
    # The retry wakes the running app's sender: the digest goes out without another run.
    delivered = lambda: len(site.relay.to("rathaus@borna.example")) == 1  # noqa: E731
    await wait_until(delivered, 30, 0.1, "the retried digest")
    assert (await site.run_digests(at)).sent == 0  # and only once

    await page.goto(f"{site.url}/verwaltung/beitraege")
    (article,) = await _newest(site, 1)
    await page.get_by_role("link", name=article.title).click()
    await page.get_by_label("Titel").fill("Neu gefasster Titel")
    await page.get_by_role("button", name="Speichern").click()
    await page.goto(f"{site.url}/artikel/{article.slug}")
    await page.get_by_role("heading", name="Neu gefasster Titel").wait_for()
    await page.goto(f"{site.url}/verwaltung/beitraege/{article.id}")
    await page.get_by_role("button", name="Verbergen").click()
    await page.goto(f"{site.url}/")
    assert "Neu gefasster Titel" not in await page.locator("main").inner_text()

    await page.goto(f"{site.url}/verwaltung/vorschau")
    await page.get_by_label("Kommune", exact=True).select_option(label="Stadt Borna")
    await page.get_by_role("button", name="Vorschau zeigen").click()
    await page.get_by_role("heading", name=re.compile(r"^Stadt Borna: ")).wait_for()

    await page.goto(f"{site.url}/archiv")
    await page.get_by_role("heading", level=1).wait_for()

    await page.goto(f"{site.url}/verwaltung/")
    await page.get_by_role("button", name="Abmelden").click()
    await page.wait_for_url(f"{site.url}/verwaltung/anmelden")


async def _newest(site: Site, count: int) -> list[store.Article]:
    async with site.sessions() as session:
        return list(await store.newest_articles(session, count))

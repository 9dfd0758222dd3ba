"""Shared fixtures: one store per database kind, settings, the app over HTTP, a real SMTP
server, a scripted feed server, a real browser. Plain helper functions are in helpers.py."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import hypothesis
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import store
from service.config import Settings

from .browser import HEIGHT, Watch, chromium_executable
from .feedserver import FeedServer
from .helpers import (
    POSTGRES_ADMIN_DSN,
    RecordingHandler,
    SmtpServer,
    app_client,
    import_demo,
    make_settings,
    serving,
    start_relay,
    with_smtp,
)


def _postgres_reachable() -> str | None:
    async def probe() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def postgres_available() -> None:
    """PostgreSQL must be reachable; without it the tests skip, except in CI where they fail."""
    problem = _postgres_reachable()
    if problem is None:
        return
    message = f"PostgreSQL at {POSTGRES_ADMIN_DSN} is not reachable: {problem}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@dataclass(frozen=True)
class Database:
    kind: str
    url: str


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of each kind: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}")
        return
    request.getfixturevalue("postgres_available")
    name = f"pp_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    server = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield Database("postgresql", f"{server}/{name}")
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    """Settings on an empty database of each kind (see `database`)."""
    return make_settings(tmp_path, database.url, feeds_check_seconds=1)


@pytest.fixture
def plain_settings(tmp_path: Path) -> Settings:
    """Settings for a test that needs no database: a SQLite URL in tmp_path, nothing created,
    and the test runs once instead of once per database kind."""
    return make_settings(tmp_path, feeds_check_seconds=1)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A migrated engine; fails the test if it leaves a connection checked out."""
    engine = store.create_engine(settings.database_url)
    await store.upgrade(engine)
    yield engine
    checked_out = engine.pool.checkedout()
    await engine.dispose()
    assert checked_out == 0, f"{checked_out} pooled connection(s) leaked by the test"


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return store.session_factory(engine)


@pytest.fixture
async def demo(sessions: async_sessionmaker[AsyncSession]) -> None:
    """The demo listing imported into the store."""
    await import_demo(sessions)


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    """The settings `client` serves the app with. A test module overrides this fixture to
    serve other settings (mail_settings) or data imported before the app starts (demo)."""
    return settings


@pytest.fixture
async def client(app_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the real app, served by uvicorn on a free loopback port."""
    async with app_client(app_settings) as client:
        yield client


# --- a real SMTP server -------------------------------------------------------------------


@pytest.fixture
async def smtp_server(request: pytest.FixtureRequest) -> AsyncIterator[SmtpServer]:
    """aiosmtpd on a free loopback port, in the test's event loop."""
    marker = request.node.get_closest_marker("smtp_replies")
    handler = RecordingHandler(list(marker.args) if marker else [])
    utf8 = request.node.get_closest_marker("smtputf8") is not None
    server, port = await start_relay(handler, ident="test", enable_SMTPUTF8=utf8)
    yield SmtpServer("127.0.0.1", port, handler)
    server.close()
    await server.wait_closed()


@pytest.fixture
def mail_settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    """Settings that send through the test SMTP server and retry at once."""
    return with_smtp(settings, smtp_server.host, smtp_server.port)


@pytest.fixture
def plain_mail_settings(plain_settings: Settings, smtp_server: SmtpServer) -> Settings:
    """`mail_settings` for a test that needs no database."""
    return with_smtp(plain_settings, smtp_server.host, smtp_server.port)


# --- property-based tests -----------------------------------------------------------------

# Properties run 2,000 examples each; HYPOTHESIS_PROFILE=quick runs 100 while developing.
hypothesis.settings.register_profile(
    "partnerpost",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.register_profile(
    "quick", parent=hypothesis.settings.get_profile("partnerpost"), max_examples=100
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "partnerpost"))


@pytest.fixture
async def feed_server() -> AsyncIterator[FeedServer]:
    """The scripted source server of `tests/feedserver.py` on a free loopback port."""
    server = FeedServer()
    async with serving(server) as url:
        server.base = url
        yield server


# --- a real browser -----------------------------------------------------------------------
# Playwright objects belong to the event loop that made them, and the browser lives for the
# whole session: a test that uses `page` runs in the session's loop
# (`pytest.mark.asyncio(loop_scope="session")`), and so must every async fixture it uses.


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium (the machine's, never a download) for the whole session."""
    executable = chromium_executable()
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=executable)
        yield chromium
        await chromium.close()


@pytest.fixture
def width() -> int:
    """The browser window's width in CSS pixels; tests parametrize it over `WIDTHS`."""
    return 1280


@pytest.fixture
def watch() -> Watch:
    """What went wrong in the test's page (see `page`)."""
    return Watch()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser, width: int, watch: Watch) -> AsyncIterator[Page]:
    """A page in a context of its own (no cookies from other tests), `width` wide; fails
    the test on any console error, uncaught exception, failed request or error status."""
    context = await browser.new_context(viewport={"width": width, "height": HEIGHT})
    page = await context.new_page()
    watch.attach(page)
    try:
        yield page
    finally:
        await context.close()
    assert not watch.problems, "the page reported:\n" + "\n".join(watch.problems)

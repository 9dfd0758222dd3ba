"""Shared fixtures: one store per database kind, settings, a live HTTP server, a real SMTP
server, a real browser."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import hypothesis
import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, Page, async_playwright
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import store
from service.config import Settings

from .browser import HEIGHT, Watch, chromium_executable
from .feedserver import FeedServer

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
DEMO = ROOT / "service" / "demo" / "kommunalpartnerschaften-ukraine.txt"
ADMIN_TOKEN = "test-admin-token-0123456789"
BASE_URL = "https://partnerpost.example.org"
# A database where the tests may create and drop databases of their own.
POSTGRES_ADMIN_DSN = os.environ.get(
    "PARTNERPOST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
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
    return Settings(
        _env_file=None,
        database_url=database.url,
        base_url=BASE_URL,
        feeds_dir=tmp_path / "feeds",
        admin_token=ADMIN_TOKEN,
        feeds_check_seconds=1,
    )


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
async def live_server(settings: Settings) -> AsyncIterator[str]:
    """The real app behind uvicorn on a free loopback port; yields its base URL."""
    async with running_app(settings) as url:
        yield url


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[str]:
    """Serve the real app for these settings on a free loopback port."""
    from service.web import create_app

    async with serving(create_app(settings)) as url:
        yield url


@asynccontextmanager
async def serving(app: object, listening: socket.socket | None = None) -> AsyncIterator[str]:
    """Run an ASGI app under uvicorn (lifespan included) on a free loopback port, or on
    `listening`, a socket already bound (when the app must know its own URL)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listening] if listening else None))
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# --- a real SMTP server -------------------------------------------------------------------


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


class RecordingHandler:
    """aiosmtpd handler that records accepted messages and plays scripted faults."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.received: list[Received] = []
        self.attempts = 0
        self.slow_seconds = 0.0
        # 'slow': the relay has the whole message (recorded) but answers only after this.
        self.slow_reply_seconds = 30.0
        # When set to an event, every DATA waits for it before it is recorded and answered.
        self.hold: asyncio.Event | None = None
        self.peers: set[object] = set()

    async def handle_DATA(self, server, session, envelope) -> str:
        self.attempts += 1
        self.peers.add(session.peer)
        reply = self.replies.pop(0) if self.replies else "250"
        if self.hold is not None:
            await self.hold.wait()
        if self.slow_seconds:
            await asyncio.sleep(self.slow_seconds)
        if reply == "slow":
            self._record(envelope)
            await asyncio.sleep(self.slow_reply_seconds)
            return "250 OK queued"
        if reply == "drop":
            server.transport.close()
            return "421 closing"
        if reply[0] in "45":
            return f"{reply} scripted failure"
        self._record(envelope)
        return "250 OK queued"

    def _record(self, envelope) -> None:
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.recipients]

    async def wait_for(self, count: int, patience: float = 30.0) -> list[Received]:
        """The received messages once there are at least `count` (mail sent by a
        background job arrives a moment after the request that caused it)."""
        for _ in range(int(patience / 0.02)):
            if len(self.received) >= count:
                return self.received
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.received)} of {count} messages arrived")


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: RecordingHandler


@pytest.fixture
async def smtp_server(request: pytest.FixtureRequest) -> AsyncIterator[SmtpServer]:
    """aiosmtpd on a free loopback port, in the test's event loop."""
    marker = request.node.get_closest_marker("smtp_replies")
    utf8 = request.node.get_closest_marker("smtputf8") is not None
    async with smtp_relay(list(marker.args) if marker else [], utf8) as relay:
        yield relay


@asynccontextmanager
async def smtp_relay(replies: list[str], utf8: bool = False) -> AsyncIterator[SmtpServer]:
    """aiosmtpd with a `RecordingHandler` on a free loopback port, in the running loop."""
    from aiosmtpd.smtp import SMTP

    handler = RecordingHandler(replies)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp.test", ident="test", enable_SMTPUTF8=utf8),
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def mail_settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    """Settings that send through the test SMTP server and retry at once."""
    return settings.model_copy(
        update={
            "mailer": "smtp",
            "smtp_host": smtp_server.host,
            "smtp_port": smtp_server.port,
            "smtp_timeout": 5,
            "mail_from": "Kommunalpartnerschaften Ukraine <news@partnerpost.example.org>",
            "secret_key": SecretStr("test-secret-key-0123456789abcdefghijkl"),
            "digest_retry_base_seconds": 0,
        }
    )


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


# --- a scripted feed server ---------------------------------------------------------------


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

"""What the test modules share: paths and constants, settings, the demo import, subscribers,
waiting for a condition, the app served over HTTP, and the `partnerpost` command.

Plain functions and constants only (fixtures live in conftest.py); test modules import from
here and never from each other.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from aiosmtpd.smtp import SMTP
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import confirmations, digest, ingest, mailer, store
from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
DEMO = ROOT / "service" / "demo" / "kommunalpartnerschaften-ukraine.txt"
DEMO_TEXT = DEMO.read_text(encoding="utf-8")
# (title, date, caption or None), newest first, exactly as on the page.
DEMO_ARTICLES = [
    (
        "Zwei Jahre nach Kriegsbeginn: Deutsche und ukrainische Kommunen stehen Seite an Seite",
        date(2024, 2, 24),
        "Ein ausrangierter Krankenwagen mit Einschusslöchern steht vor der Leipziger "
        "Kongresshalle am Zoo.",
    ),
    (
        "Der Wiederaufbau in der Ukraine beginnt jetzt!",
        date(2023, 11, 28),
        'Eine blau-gelbe Flagge mit dem Schriftzug "I stand with Ukraine" weht vor der '
        "Kongresshalle am Zoo in Leipzig.",
    ),
    (
        "Starke Partnerschaften für den Wiederaufbau",
        date(2023, 11, 27),
        "Auf einem Marktplatz stehen Leute",
    ),
    (
        "Ukrainische Binnenvertriebene: Wie deutsche Kommunen ihren Partnerstädten helfen",
        date(2023, 11, 10),
        "Rechts und links neben einem roten Lieferwagen stehen Personen, vor ihnen liegen Pakete.",
    ),
    (
        "Leipzig – Kyjiw: Eine dynamische Partnerschaft in bewegten Zeiten",
        date(2023, 11, 9),
        "Mehrere Personen richten ihren Blick nach oben; im Hintergrund Gebäude und Flaggen.",
    ),
    (
        "Ukraine: In Erwartung eines kalten Winters",
        date(2023, 10, 9),
        "Drei Männer stehen vor einem mit Geräten beladenen LKW.",
    ),
    (
        "Ein Jahr Solidarität – Deutsch-ukrainische Partnerschaften und die Kraft der Städte",
        date(2023, 2, 27),
        "Eine deutsche und eine ukrainische Flagge liegen übereinander.",
    ),
    (
        "Städtepartnerschaften mit der Ukraine für eine strategische nachhaltige Entwicklung",
        date(2022, 7, 13),
        None,
    ),
    (
        "„Wir wollen, dass wir jetzt wieder im Austausch stehen!“",
        date(2022, 4, 19),
        "Kristin Michalek-Götz und Dolmetscherin Olga Galema lächeln in die Kamera",
    ),
    ("„Wir holen die Menschen mit dem Auto von der Grenze ab“", date(2022, 3, 11), None),
]
# The title a digest for Stadt Leipzig (partner Kyjiw) lists first.
LEIPZIG_FIRST = "Leipzig – Kyjiw: Eine dynamische Partnerschaft in bewegten Zeiten"
ADMIN_TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BASE_URL = "https://partnerpost.example.org"
# A database where the tests may create and drop databases of their own.
POSTGRES_ADMIN_DSN = os.environ.get(
    "PARTNERPOST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
MAIL_FROM = "Kommunalpartnerschaften Ukraine <news@partnerpost.example.org>"
SECRET_KEY = "test-secret-key-0123456789abcdefghijkl"
PARTNERPOST = str(Path(sys.executable).parent / "partnerpost")
BERLIN = ZoneInfo("Europe/Berlin")

sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize("database", ["postgresql"], indirect=True)

Sessions = async_sessionmaker[AsyncSession]


# --- settings -----------------------------------------------------------------------------


def make_settings(folder: Path, database_url: str | None = None, **changes: Any) -> Settings:
    """Test settings whose files live in `folder` (a SQLite store there unless given a URL)."""
    values: dict[str, Any] = {
        "database_url": database_url or f"sqlite+aiosqlite:///{folder / 'store.sqlite3'}",
        "base_url": BASE_URL,
        "feeds_dir": folder / "feeds",
        "admin_token": ADMIN_TOKEN,
        **changes,
    }
    return Settings(_env_file=None, **values)


def with_smtp(settings: Settings, host: str, port: int, **changes: Any) -> Settings:
    """`settings` sending through the SMTP server at host:port, retrying at once."""
    values: dict[str, Any] = {
        "mailer": "smtp",
        "smtp_host": host,
        "smtp_port": port,
        "smtp_timeout": 5,
        "mail_from": MAIL_FROM,
        "secret_key": SecretStr(SECRET_KEY),
        "digest_retry_base_seconds": 0,
        **changes,
    }
    return settings.model_copy(update=values)


# --- data ---------------------------------------------------------------------------------


async def import_demo(sessions: Sessions, **options: Any) -> ingest.IngestReport:
    """The demo listing imported as `partnerpost ingest` does (options go to ingest.save)."""
    return await ingest.save(sessions, ingest.parse_listing_text(DEMO_TEXT), **options)


async def add_article(
    sessions: Sessions,
    title: str,
    published: str,
    *,
    place: str = "Bonn",
    teaser: str = "x",
    notify: bool = True,
    **fields: Any,
) -> ingest.IngestReport:
    """One article imported as JSON, as the admin API or `partnerpost ingest` takes it."""
    item = {"title": title, "teaser": teaser, "place": place, "published": published, **fields}
    return await ingest.save(sessions, ingest.parse_json(json.dumps(item)), notify=notify)


async def subscribe(
    sessions: Sessions,
    *emails: str,
    name: str = "Gemeinde Vielfach",
    frequency: str = "weekly",
    status: store.AddressStatus = store.AddressStatus.ACTIVE,
    now: datetime | None = None,
    **details: Any,
) -> list[store.Address]:
    """Each of `emails` subscribed for the municipality `name` (created with `details` the
    first time), in one transaction; active and confirmed `now` unless told otherwise."""
    async with sessions() as session, session.begin():
        subscriber = await store.subscriber_by_name(session, name)
        if subscriber is None:
            subscriber = await store.create_subscriber(
                session, name=name, frequency=store.Frequency(frequency), **details
            )
        return [
            await store.add_address(session, subscriber, email, status, now=now) for email in emails
        ]


async def run_digests(settings: Settings, sessions: Sessions, at: datetime) -> digest.RunReport:
    """One digest run at `at`, as the scheduler starts it, over a transport of its own."""
    transport = mailer.create_transport(settings)
    try:
        return await digest.DigestRunner(settings, sessions, transport).run(at)
    finally:
        await transport.close()


async def send_confirmations(
    settings: Settings, sessions: Sessions
) -> confirmations.ConfirmationReport:
    """One pass over the confirmation mail queue, over a transport of its own."""
    transport = mailer.create_transport(settings)
    try:
        return await confirmations.ConfirmationSender(settings, sessions, transport).run()
    finally:
        await transport.close()


def next_monday_8am(after: datetime | None = None) -> datetime:
    """A moment just after the next weekly period end (Monday 07:00 Berlin)."""
    moment = (after or datetime.now(BERLIN)).astimezone(BERLIN)
    days = (7 - moment.weekday()) % 7 or 7
    return (moment + timedelta(days=days)).replace(hour=8, minute=0, second=0, microsecond=0)


def plain_text(received: Any) -> str:
    """The text/plain part of a received message."""
    return str(received.message.get_body(("plain",)).get_content())


def listed_titles(received: Any) -> list[str]:
    """The article titles a digest lists, in its order."""
    return [line[2:] for line in plain_text(received).splitlines() if line.startswith("* ")]


# --- waiting ------------------------------------------------------------------------------


async def wait_until(
    condition: Callable[[], object | Awaitable[object]],
    seconds: float = 30.0,
    interval: float = 0.05,
    what: str | Callable[[], str] = "the condition",
) -> None:
    """Poll `condition` (a function or a coroutine function) until it is true; fail after
    `seconds`, naming `what` was not reached."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what() if callable(what) else what} not within {seconds}s")
        await asyncio.sleep(interval)


def wait_until_blocking(
    condition: Callable[[], object],
    seconds: float = 30.0,
    interval: float = 0.1,
    what: str = "the condition",
) -> None:
    """`wait_until` for code without an event loop (threads, subprocesses)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not within {seconds}s")
        time.sleep(interval)


# --- the app over HTTP --------------------------------------------------------------------


def loopback_server(app: Any) -> uvicorn.Server:
    """uvicorn for `app` (lifespan included) on a free loopback port, not started yet."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    return uvicorn.Server(config)


def base_url(server: uvicorn.Server) -> str:
    """The URL a started `loopback_server` answers on."""
    return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


@asynccontextmanager
async def serving(app: Any, listening: socket.socket | None = None) -> AsyncIterator[str]:
    """Run an ASGI app under uvicorn (lifespan included) on a free loopback port, or on
    `listening`, a socket already bound (when the app must know its own URL)."""
    server = loopback_server(app)
    task = asyncio.create_task(server.serve(sockets=[listening] if listening else None))
    await wait_until(lambda: server.started or task.done(), 60, 0.01, "uvicorn's start")
    assert server.started, "uvicorn did not start"
    try:
        yield base_url(server)
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def http_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of `app`, served by uvicorn on a free loopback port."""
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[str]:
    """Serve the real app for these settings on a free loopback port; yields its URL."""
    from service.web import create_app

    async with serving(create_app(settings)) as url:
        yield url


def app_client(settings: Settings) -> Any:
    """An HTTP client of the real app for `settings` (an async context manager)."""
    from service.web import create_app

    return http_client(create_app(settings))


async def start_relay(handler: Any, port: int = 0, **options: Any) -> tuple[asyncio.Server, int]:
    """An aiosmtpd server with `handler` on a loopback port (0: a free one), and its port."""
    options.setdefault("hostname", "smtp.test")
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, **options), "127.0.0.1", port
    )
    return server, server.sockets[0].getsockname()[1]


# --- a recording SMTP server ----------------------------------------------------------


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
        await wait_until(
            lambda: len(self.received) >= count,
            patience,
            0.02,
            lambda: f"{count} messages (got {len(self.received)})",
        )
        return self.received


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: RecordingHandler


# --- the `partnerpost` command ------------------------------------------------------------


def free_port() -> int:
    """A loopback port that nothing listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(variables: dict[str, str]) -> dict[str, str]:
    """This process's environment without any PARTNERPOST_ variable, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERPOST_")}
    env.update(variables)
    return env


def store_env(settings: Settings) -> dict[str, str]:
    """The variables naming the store and the feeds folder of `settings`."""
    return {
        "PARTNERPOST_DATABASE_URL": settings.database_url,
        "PARTNERPOST_FEEDS_DIR": str(settings.feeds_dir),
    }


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a command runs in for `settings` (store, base URL, admin token);
    `extra` adds or overrides variables."""
    return environment(
        {
            **store_env(settings),
            "PARTNERPOST_BASE_URL": settings.public_url,
            "PARTNERPOST_ADMIN_TOKEN": settings.admin_token.get_secret_value(),
            **extra,
        }
    )


def mail_env(settings: Settings, **extra: str) -> dict[str, str]:
    """`cli_env` plus the mail settings; `extra` adds or overrides variables."""
    mail = {
        "PARTNERPOST_MAILER": settings.mailer,
        "PARTNERPOST_SMTP_HOST": settings.smtp_host,
        "PARTNERPOST_SMTP_PORT": str(settings.smtp_port),
        "PARTNERPOST_MAIL_FROM": settings.mail_from,
        "PARTNERPOST_SECRET_KEY": settings.secret_key.get_secret_value(),
        "PARTNERPOST_DIGEST_RETRY_BASE_SECONDS": "0",
        "PARTNERPOST_OUTBOX_DIR": str(settings.feeds_dir.parent / "outbox"),
    }
    return cli_env(settings, **{**mail, **extra})


def partnerpost(
    *args: str, env: dict[str, str], cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run `partnerpost ARGS` to its end, as an operator would."""
    return subprocess.run(
        [PARTNERPOST, *args], env=env, input=stdin, capture_output=True, timeout=120, cwd=cwd
    )


def run(
    settings: Settings, *args: str, stdin: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[bytes]:
    """`partnerpost ARGS` for `settings` (`env` adds or overrides variables)."""
    return partnerpost(
        *args, env=cli_env(settings, **env), cwd=settings.feeds_dir.parent, stdin=stdin
    )


async def start(
    settings: Settings,
    *args: str,
    stdout: int = asyncio.subprocess.DEVNULL,
    stderr: int = asyncio.subprocess.PIPE,
    **env: str,
) -> asyncio.subprocess.Process:
    """`partnerpost ARGS` with the mail settings, started without blocking the event loop
    (the test SMTP server runs in it)."""
    return await asyncio.create_subprocess_exec(
        PARTNERPOST,
        *args,
        env=mail_env(settings, **env),
        cwd=settings.feeds_dir.parent,
        stdout=stdout,
        stderr=stderr,
    )


async def cli(settings: Settings, *args: str, **env: str) -> tuple[int, str, str]:
    """Run `partnerpost ARGS` with the mail settings to its end, without blocking the event
    loop; its exit code, stdout and stderr."""
    process = await start(settings, *args, stdout=asyncio.subprocess.PIPE, **env)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=180)
    return await process.wait(), stdout.decode(), stderr.decode()


async def digest_run(settings: Settings, **env: str) -> tuple[int, str, str]:
    """`partnerpost digest run` just after the next weekly period end (see `cli`)."""
    return await cli(settings, "digest", "run", "--at", next_monday_8am().isoformat(), **env)


@dataclass
class Served:
    """A `partnerpost serve` process: its base URL, the process and its log file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def answers(self) -> bool:
        """Whether it answers HTTP yet; fails at once if the process died."""
        try:
            httpx.get(f"{self.url}/healthz", timeout=1)
        except httpx.TransportError:
            assert self.process.poll() is None, self.text()
            return False
        return True


@contextmanager
def serve(
    env: dict[str, str], cwd: Path, *args: str, seconds: float = 60, group: bool = False
) -> Iterator[Served]:
    """`partnerpost serve ARGS` on a free loopback port, once it answers; stopped with
    SIGINT (killed if it hangs) unless the test stopped it. With `group` it leads a process
    group of its own, as a shell's foreground job does (Ctrl-C signals the whole group)."""
    port = free_port()
    log = cwd / f"serve-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [PARTNERPOST, "serve", "--port", str(port), *args],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=group,
        )
    served = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_blocking(served.answers, seconds, 0.1, "the server's first answer")
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@asynccontextmanager
async def smtp_relay(replies: list[str], utf8: bool = False) -> AsyncIterator[SmtpServer]:
    """aiosmtpd with a `RecordingHandler` on a free loopback port, in the running loop."""
    handler = RecordingHandler(replies)
    server, port = await start_relay(handler, ident="test", enable_SMTPUTF8=utf8)
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        server.close()
        await server.wait_closed()

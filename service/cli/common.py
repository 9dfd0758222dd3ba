"""What every command shares: the consoles, exit codes, settings and logging set up from
the environment (secrets masked), a store opened and closed around a command's work, and
errors turned into a message and an exit code.

Owns no data. Imports `config`, `errors` and `store`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import store
from service.config import Settings, load_settings, mask_url
from service.errors import PartnerpostError

# soft_wrap: a long message stays one line in logs and pipes instead of wrapping at 80.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")
Work = Callable[[AsyncEngine, async_sessionmaker[AsyncSession]], Awaitable[T]]
# The package's name for all commands: operators filter the log lines by it.
log = logging.getLogger("service.cli")

EXIT_REJECTED = 1
EXIT_FAILURE = 2


def fail(message: str, cause: BaseException | None = None, *, label: str = "error") -> NoReturn:
    """Print `label: message` in red to stderr and exit with EXIT_FAILURE."""
    err.print(f"[red]{label}:[/] {escape(message)}")
    raise typer.Exit(EXIT_FAILURE) from cause


def settings_from_environment(**overrides: object) -> Settings:
    """Settings from the environment; also sets up logging as they say."""
    try:
        settings = load_settings(**overrides)
    except PartnerpostError as exc:
        fail(str(exc), exc, label="configuration error")
    context = click.get_current_context(silent=True)
    configure_logging(settings, verbose=bool(context and context.find_root().obj))
    if settings.uses_placeholder_secret:
        log.warning(
            "PARTNERPOST_SECRET_KEY is the development placeholder: anyone can forge "
            "confirmation and unsubscribe links. Set a random key of at least 32 characters "
            "before anyone else can reach this instance."
        )
    return settings


class _MaskingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to stderr with the password of any URL in a line (or traceback) masked."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted line, URL passwords masked."""
        return mask_url(super().format(record))


def configure_logging(settings: Settings, *, verbose: bool = False) -> None:
    """Log lines to stderr: readable text, or one JSON object per line for collectors."""
    handler = _MaskingHandler()
    if settings.log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else settings.log_level)
    # Both log every routine step at INFO (each job tick, each migration check).
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def with_store(
    settings: Settings, work: Work[T], *, migrate: bool = True, create: bool = False
) -> T:
    """Run `work` with a migrated store, closing the engine afterwards. Unless `create`,
    a SQLite database must exist already: a command run in the wrong folder says so
    instead of creating an empty database there."""
    if not create:
        require_database(settings)

    async def run() -> T:
        engine = store.create_engine(settings.database_url)
        try:
            if migrate:
                await store.upgrade(engine)
            return await work(engine, store.session_factory(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except PartnerpostError as exc:
        fail(str(exc), exc)
    except DBAPIError as exc:
        # A database failure is never "input rejected" (exit 1): the transaction that
        # failed was rolled back, and the operator can run the command again.
        log.debug("database error", exc_info=True)
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        fail(
            f"{reason}; the failed transaction was rolled back, run the command again",
            exc,
            label="database error",
        )


def in_session(settings: Settings, query: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`query` in one session of the store, as `with_store` runs work."""

    async def work(_: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> T:
        async with sessions() as session:
            return await query(session)

    return with_store(settings, work)


def in_transaction(settings: Settings, change: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`change` in one transaction of the store, as `with_store` runs work."""

    async def work(_: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> T:
        async with sessions() as session, session.begin():
            return await change(session)

    return with_store(settings, work)


def require_database(settings: Settings) -> None:
    """Exit with a hint when the SQLite file of the settings does not exist."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    path = Path(url.database).resolve()
    if not path.exists():
        fail(
            f"no database at {path} "
            f"(PARTNERPOST_DATABASE_URL={mask_url(settings.database_url)}, "
            f"working directory {Path.cwd()}). Run the command where the "
            "database is, set PARTNERPOST_DATABASE_URL, or create it with "
            "`partnerpost db upgrade`."
        )

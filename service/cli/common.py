"""What every command shares: the consoles, exit codes, settings and logging set up from
the environment (secrets masked), a store opened and closed around a command's work,
errors turned into a message and an exit code, and `lazy`, which the command modules
import the rest of the package through.

Importing the command modules must stay cheap: `partnerpost --help` and a group's help
import them all, and no more than typer and rich (a test holds this). So they and this
module name what they use of the package and of SQLAlchemy through `lazy` (or import it
inside a function), never with a plain import at the top.

Owns no data. Imports `config`, `errors` and `store`.
"""

from __future__ import annotations

import gc
import importlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from service.errors import PartnerpostError

T = TypeVar("T")

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from service import config, store
    from service.config import Settings

    Work = Callable[[AsyncEngine, async_sessionmaker[AsyncSession]], Awaitable[T]]


class _LazyModule:
    """Stands for a module until first used: an attribute read imports it and reads it there.

    Written here rather than taken from importlib.util.LazyLoader (or the lazy_loader
    package built on it): those put a half-made module into sys.modules, which code the
    command goes on to import (the web app, the scheduler) would share, and on Python 3.11
    two threads reading it first race. This only calls `import_module` (thread-safe) on
    each read, which is a dictionary look-up once the module is loaded.
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy(*names: str) -> Any:
    """Modules by dotted name, imported when first used: one stand-in, or a tuple of them.
    Callers declare the real modules under `TYPE_CHECKING`, so the types stay checked."""
    modules = tuple(_LazyModule(name) for name in names)
    return modules[0] if len(modules) == 1 else modules


if not TYPE_CHECKING:
    config, store = lazy("service.config", "service.store")

# soft_wrap: a long message stays one line in logs and pipes instead of wrapping at 80.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
# The package's name for all commands: operators filter the log lines by it.
log = logging.getLogger("service.cli")


@dataclass
class Options:
    """The options given before the command (`partnerpost -v ...`), set by the app."""

    verbose: bool = False


options = Options()

EXIT_REJECTED = 1
EXIT_FAILURE = 2


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector paused for a bulk step of one command (an import of
    thousands of articles): it would otherwise walk every object of the process again and
    again as the step allocates, a sixth of the import's time. Reference counting still
    frees what the step drops; cycles wait until the collector runs again afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def fail(message: str, cause: BaseException | None = None, *, label: str = "error") -> NoReturn:
    """Print `label: message` in red to stderr and exit with EXIT_FAILURE."""
    err.print(f"[red]{label}:[/] {escape(message)}")
    raise typer.Exit(EXIT_FAILURE) from cause


def settings_from_environment(**overrides: object) -> Settings:
    """Settings from the environment; also sets up logging as they say."""
    try:
        settings = config.load_settings(**overrides)
    except PartnerpostError as exc:
        fail(str(exc), exc, label="configuration error")
    configure_logging(settings, verbose=options.verbose)
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
        return config.mask_url(super().format(record))


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
    import asyncio

    from sqlalchemy.exc import DBAPIError

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
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    path = Path(url.database).resolve()
    if not path.exists():
        fail(
            f"no database at {path} "
            f"(PARTNERPOST_DATABASE_URL={config.mask_url(settings.database_url)}, "
            f"working directory {Path.cwd()}). Run the command where the "
            "database is, set PARTNERPOST_DATABASE_URL, or create it with "
            "`partnerpost db upgrade`."
        )

"""Commands that run the service or prepare for it: `serve`, `worker`, `db upgrade`.

Owns no data. Imports `config`, `errors`, `store`, `runtime`, `web`, `cli.common` and `cli.serving`.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli.common import (
    EXIT_FAILURE,
    fail,
    lazy,
    log,
    out,
    settings_from_environment,
    with_store,
)
from service.errors import PartnerpostError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from service import runtime, store
else:
    runtime, store = lazy("service.runtime", "service.store")

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: PARTNERPOST_HOST].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on [default: PARTNERPOST_PORT].")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Processes sharing the port [default: PARTNERPOST_WORKERS, 1]."
        ),
    ] = None,
) -> None:
    """Serve pages, feeds and the admin API, with the scheduler running.

    Links follow HOST and PORT unless PARTNERPOST_BASE_URL is set.
    """
    from service.cli import serving
    from service.web import create_app

    chosen = (("host", host), ("port", port), ("workers", workers))
    given = {name: value for name, value in chosen if value is not None}
    settings = settings_from_environment(**given)
    try:
        settings.check_listen_address(settings.host)
    except PartnerpostError as exc:
        fail(str(exc), exc)
    proxies = settings.trusted_proxy_list
    # X-Forwarded-For is believed only from the proxies named in the settings (never from
    # uvicorn's default 127.0.0.1: a local hop would let anyone choose their address); the
    # client is the right-most address of the chain that is not one of them.
    serving.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations."""

    async def work(engine: AsyncEngine, _: async_sessionmaker[AsyncSession]) -> None:
        await store.upgrade(engine)

    with_store(settings_from_environment(), work, migrate=False, create=True)
    out.print("database is up to date")


def worker() -> None:
    """Run the scheduler without HTTP: sources, digests, retries and feeds, until SIGTERM."""
    settings = settings_from_environment()

    import asyncio

    async def work(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with runtime.Runtime(settings, engine, sessions) as running:
            log.info("worker %s started", running.runner.worker)
            await stop.wait()
            log.info("worker %s stopping", running.runner.worker)
        if not running.stopped_in_time:
            raise typer.Exit(EXIT_FAILURE)
        log.info("worker %s stopped", running.runner.worker)

    with_store(settings, work, create=True)

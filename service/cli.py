"""Command line: `partnerpost serve | db | ingest | feeds | articles`.

An entry point: builds the settings, opens and closes the engine for each command, and
turns errors into a message and an exit code (0 fine, 1 some input rejected, 2 failure).
Imports every module it drives.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import feeds, ingest, store, templating
from service.config import Settings, load_settings
from service.errors import IngestInputError, PartnerpostError

app = typer.Typer(
    help="partnerpost: feeds and digests of German–Ukrainian municipal partnership news.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
feeds_app = typer.Typer(help="Feed files.", no_args_is_help=True)
articles_app = typer.Typer(help="Stored articles.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(feeds_app, name="feeds")
app.add_typer(articles_app, name="articles")

# soft_wrap: a long message stays one line in logs and pipes instead of wrapping at 80.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

EXIT_REJECTED = 1
EXIT_FAILURE = 2


def _settings() -> Settings:
    try:
        return load_settings()
    except PartnerpostError as exc:
        err.print(f"[red]configuration error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILURE) from exc


def _with_store(
    settings: Settings,
    work: Callable[[AsyncEngine, async_sessionmaker[AsyncSession]], Awaitable[T]],
    *,
    migrate: bool = True,
) -> T:
    """Run `work` with a migrated store, closing the engine afterwards."""

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
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILURE) from exc


@app.callback()
def _logging(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve pages, feeds and the admin API, with the scheduler running."""
    import uvicorn

    from service.web import create_app

    settings = _settings()
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, proxy_headers=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations."""

    async def work(engine: AsyncEngine, _: async_sessionmaker[AsyncSession]) -> None:
        await store.upgrade(engine)

    _with_store(_settings(), work, migrate=False)
    out.print("database is up to date")


def _read_source(source: str) -> tuple[str, str]:
    """The text at PATH, URL or '-' and a name to detect its format by."""
    if source == "-":
        return ingest.decode(sys.stdin.buffer.read(), "standard input"), ""
    if source.startswith(("http://", "https://")):
        import httpx

        try:
            response = httpx.get(source, follow_redirects=True, timeout=30)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise IngestInputError(source, str(exc)) from exc
        return ingest.decode(response.content, source), source
    try:
        return ingest.decode(Path(source).read_bytes(), source), source
    except OSError as exc:
        raise IngestInputError(source, exc.strerror or str(exc)) from exc


@app.command("ingest")
def ingest_command(
    source: Annotated[str, typer.Argument(help="A file, an http(s) URL, or - for stdin.")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="text, html, json or ndjson; detected when omitted."),
    ] = None,
) -> None:
    """Import articles from a listing page (text or HTML), JSON or NDJSON."""
    settings = _settings()
    try:
        text, name = _read_source(source)
        chosen = ingest.detect_format(text, name) if fmt is None else ingest.check_format(fmt)
        parsed = ingest.parse(text, chosen, base_url=name or None)
    except PartnerpostError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILURE) from exc

    async def work(
        engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> ingest.IngestReport:
        report = await ingest.save(sessions, parsed)
        if report.changed:
            await feeds.build_feeds(settings, engine, sessions)
        return report

    report = _with_store(settings, work)
    out.print(
        f"{report.created} new, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(report.rejections)} rejected"
    )
    for rejection in sorted(report.rejections, key=lambda r: r.line):
        err.print(f"rejected {source}:{rejection}", style="yellow", highlight=False, markup=False)
    if report.rejections:
        raise typer.Exit(EXIT_REJECTED)


@feeds_app.command("build")
def feeds_build() -> None:
    """Write all feed files now (only those whose content changed)."""
    settings = _settings()

    async def work(
        engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> feeds.BuildReport | None:
        return await feeds.build_feeds(settings, engine, sessions)

    report = _with_store(settings, work)
    if report is None:
        out.print("another process is building the feeds right now; nothing written")
        return
    out.print(
        f"{len(report.written)} written, {report.unchanged} unchanged, "
        f"{len(report.removed)} removed in {settings.feeds_dir}"
    )


@articles_app.command("list")
def articles_list(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
) -> None:
    """Show the newest articles."""
    settings = _settings()

    async def work(
        _: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> list[store.Article]:
        async with sessions() as session:
            return list(await store.newest_articles(session, limit))

    table = Table("Datum", "Ort", "Titel", "Slug")
    for article in _with_store(settings, work):
        table.add_row(
            templating.german_date(article.published_at),
            article.place,
            article.title,
            article.slug,
        )
    out.print(table)


def main() -> None:
    app()

"""Commands about articles: `ingest`, `feeds build`, `articles list`.

Owns no data. Imports `errors`, `store`, `ingest`, `feeds`, `templating` and
`cli.common`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from service.cli.common import (
    EXIT_REJECTED,
    collector_paused,
    err,
    fail,
    in_session,
    lazy,
    out,
    settings_from_environment,
    with_store,
)
from service.errors import FeedsBaseUrlChangedError, IngestInputError, PartnerpostError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from service import feeds, ingest, store, templating
    from service.config import Settings
else:
    feeds, ingest, store, templating = lazy(
        "service.feeds", "service.ingest", "service.store", "service.templating"
    )

feeds_app = typer.Typer(help="Feed files.", no_args_is_help=True)
articles_app = typer.Typer(help="Stored articles.", no_args_is_help=True)


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


def _ingest(
    settings: Settings, source: str, fmt: str | None, *, notify: bool
) -> ingest.IngestReport:
    """Read, parse and save SOURCE in one transaction; then build the feeds if it changed any."""
    try:
        text, name = _read_source(source)
        chosen = ingest.detect_format(text, name) if fmt is None else ingest.check_format(fmt)
        parsed = ingest.parse(text, chosen, base_url=name or None)
    except PartnerpostError as exc:
        fail(str(exc), exc)

    async def work(
        engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> ingest.IngestReport:
        report = await ingest.save(sessions, parsed, notify=notify)
        if report.changed:
            try:
                await feeds.build_feeds(settings, engine, sessions, wait=True)
            except FeedsBaseUrlChangedError as exc:
                err.print(
                    f"feeds not rebuilt (the running server rebuilds them): {exc}",
                    style="yellow",
                    markup=False,
                )
        return report

    return with_store(settings, work, create=True)


def ingest_command(
    source: Annotated[str, typer.Argument(help="A file, an http(s) URL, or - for stdin.")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="text, html, json or ndjson; detected when omitted."),
    ] = None,
    no_notify: Annotated[
        bool,
        typer.Option("--no-notify", help="A backfill: feeds show new articles, no digest does."),
    ] = False,
) -> None:
    """Import articles from a listing page (text or HTML), JSON or NDJSON."""
    settings = settings_from_environment()
    with collector_paused():
        report = _ingest(settings, source, fmt, notify=not no_notify)
    out.print(
        f"{report.created} new, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(report.rejections)} rejected"
    )
    for rejection in sorted(report.rejections, key=lambda r: r.line):
        err.print(f"rejected {source}:{rejection}", style="yellow", highlight=False, markup=False)
    for duplicate in report.duplicates:
        err.print(f"warning {source}:{duplicate}", style="yellow", highlight=False, markup=False)
    if report.rejections:
        raise typer.Exit(EXIT_REJECTED)


@feeds_app.command("build")
def feeds_build(
    force: Annotated[
        bool,
        typer.Option("--force", help="Rebuild even if the feeds were built for another URL."),
    ] = False,
) -> None:
    """Publish all feeds now (only those whose content changed)."""
    settings = settings_from_environment()

    async def work(
        engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> feeds.BuildReport | None:
        return await feeds.build_feeds(settings, engine, sessions, wait=True, force=force)

    report = with_store(settings, work)
    if report is None:
        out.print("another process is building the feeds right now; nothing written")
        return
    exported = f" (exported to {settings.feeds_dir})" if settings.feeds_dir else ""
    out.print(
        f"{len(report.changed)} written, {report.unchanged} unchanged, "
        f"{len(report.removed)} removed{exported}"
    )


@articles_app.command("list")
def articles_list(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
) -> None:
    """Show the newest articles."""
    newest = in_session(
        settings_from_environment(), lambda session: store.newest_articles(session, limit)
    )
    table = Table("Datum", "Ort", "Titel", "Slug")
    for article in newest:
        table.add_row(
            templating.german_date(article.published_at),
            article.place,
            article.title,
            article.slug,
        )
    out.print(table)

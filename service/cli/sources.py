"""Command line for sources: `partnerpost sources add|list|show|pause|resume|remove|poll`.

Uses `cli.common`'s helpers (settings, store, consoles, exit codes); `cli` registers this
sub-app. Imports `cli.common`, `feeds`, `store` and `sources`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from service.cli.common import (
    EXIT_FAILURE,
    EXIT_REJECTED,
    err,
    lazy,
    out,
    settings_from_environment,
    with_store,
)
from service.errors import FeedsBaseUrlChangedError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from service import clock, feeds, store
    from service.sources import manage, poller
    from service.store import sources as records
else:
    clock, feeds, store, manage, poller, records = lazy(
        "service.clock",
        "service.feeds",
        "service.store",
        "service.sources.manage",
        "service.sources.poller",
        "service.store.sources",
    )

# `service.sources.parse.FORMATS`, spelt out so that defining the options imports no
# parser (a test holds it equal to the parser's).
FORMATS = ("auto", "html", "rss", "atom", "jsonfeed", "json", "ndjson", "text")

sources_app = typer.Typer(
    help="Where news comes from, polled by the scheduler.", no_args_is_help=True
)

Name = Annotated[str, typer.Argument(help="The source's name (see `sources list`).")]


def _when(moment: datetime | None) -> str:
    return moment.astimezone(clock.BERLIN).strftime("%Y-%m-%d %H:%M") if moment else "–"


def _words(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated lists alike."""
    return [w.strip() for value in values or [] for w in value.split(",") if w.strip()]


@sources_app.command("add")
def sources_add(
    url: Annotated[str, typer.Argument(help="The http(s) URL of a feed, listing page or JSON.")],
    name: Annotated[str | None, typer.Option(help="A name; default: the URL's host.")] = None,
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = "auto",
    every: Annotated[str, typer.Option(help="How often: 15m, 2h, 1d (at least 1m).")] = "15m",
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="A topic for its articles; repeatable.")
    ] = None,
    only_mentioning: Annotated[
        list[str] | None,
        typer.Option(
            "--only-mentioning",
            help="Keep only entries naming one of these words (comma-separated, repeatable) "
            "or a subscribed municipality's partner town.",
        ),
    ] = None,
) -> None:
    """Register a source; the scheduler fetches it at once, as a backfill for no digest."""
    from pydantic import ValidationError

    from service.text import describe_validation_error

    settings = settings_from_environment()
    try:
        data = manage.SourceIn(
            url=url,
            name=name,
            format=fmt,
            every=every,
            topics=_words(topic),
            only_mentioning=_words(only_mentioning),
        )
    except ValidationError as exc:
        err.print(f"[red]error:[/] {escape(describe_validation_error(exc, 'source'))}")
        raise typer.Exit(EXIT_FAILURE) from exc

    async def work(_: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> manage.SourceView:
        return await manage.add(sessions, data, store.utcnow())

    view = with_store(settings, work, create=True)
    out.print(f"source {view.name!r} added: {view.url} every {view.every}", markup=False)


@sources_app.command("list")
def sources_list() -> None:
    """Every source with its last fetch, last success, HTTP status, items and last error."""
    settings = settings_from_environment()

    async def work(
        _: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> list[manage.SourceView]:
        return await manage.views(sessions)

    table = Table(
        "Name",
        "URL",
        "Status",
        "Last fetch",
        "Last success",
        "HTTP",
        "Items",
        "Next fetch",
        "Last error",
    )
    for view in with_store(settings, work):
        table.add_row(
            escape(view.name),
            escape(view.url),
            view.status,
            _when(view.last_fetch),
            _when(view.last_success),
            str(view.http_status or "–"),
            str(view.items if view.items is not None else "–"),
            _when(view.next_fetch),
            escape(view.last_error or ""),
        )
    out.print(table)


@sources_app.command("show")
def sources_show(name: Name) -> None:
    """One source in full, as JSON."""
    settings = settings_from_environment()

    async def work(
        _: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> list[manage.SourceView]:
        return await manage.views(sessions, [name])

    (view,) = with_store(settings, work)
    out.print(view.model_dump_json(indent=2), markup=False, highlight=False)


def _set_status(name: str, status: records.SourceStatus) -> manage.SourceView:
    settings = settings_from_environment()

    async def work(_: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> manage.SourceView:
        return await manage.set_status(sessions, name, status, store.utcnow())

    return with_store(settings, work)


@sources_app.command("pause")
def sources_pause(name: Name) -> None:
    """Stop polling a source until it is resumed."""
    view = _set_status(name, records.SourceStatus.PAUSED)
    out.print(f"source {view.name!r} paused", markup=False)


@sources_app.command("resume")
def sources_resume(name: Name) -> None:
    """Poll a paused or gone source again, at once."""
    view = _set_status(name, records.SourceStatus.ACTIVE)
    out.print(f"source {view.name!r} resumed", markup=False)


@sources_app.command("remove")
def sources_remove(name: Name) -> None:
    """Remove a source; the articles it brought stay."""
    settings = settings_from_environment()

    async def work(_: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> int:
        return await manage.remove(sessions, name)

    kept = with_store(settings, work)
    out.print(f"source {name!r} removed; its {kept} article(s) stay", markup=False)


@sources_app.command("poll")
def sources_poll(
    name: Annotated[
        str | None, typer.Argument(help="Poll this source now; default: every due source.")
    ] = None,
) -> None:
    """Fetch sources now, once: the named one, or those that are due."""
    settings = settings_from_environment()

    async def work(
        engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> poller.PollReport:
        if name is not None:
            await manage.views(sessions, [name])  # an unknown name is an error
        report = await poller.Poller(settings, sessions).run(None if name is None else [name])
        if report.changed:
            try:
                await feeds.build_feeds(settings, engine, sessions, wait=True)
            except FeedsBaseUrlChangedError as exc:
                err.print(f"feeds not rebuilt: {exc}", style="yellow", markup=False)
        return report

    report = with_store(settings, work)
    for poll in report.polls:
        line = (
            f"{poll.name}: {poll.outcome}, {poll.created} new, {poll.updated} updated, "
            f"{poll.unchanged} unchanged, {poll.skipped} skipped, {poll.rejected} rejected"
        )
        out.print(line + (f": {poll.error}" if poll.error else ""), markup=False)
    if name is not None and not report.polls:
        out.print(f"{name}: another process is polling it right now", markup=False)
    if any(p.outcome in (poller.Outcome.FAILED, poller.Outcome.GONE) for p in report.polls):
        raise typer.Exit(EXIT_FAILURE)
    if any(p.rejected for p in report.polls):
        raise typer.Exit(EXIT_REJECTED)

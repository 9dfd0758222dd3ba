"""Command line: `partnerpost serve | worker | db | ingest | feeds | articles |
subscribers | digest | sources`.

An entry point: builds the settings, opens and closes the engine for each command, and
turns errors into a message and an exit code (0 fine, 1 some input rejected, 2 failure).
Imports every module it drives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import (
    confirmations,
    consent,
    digest,
    feeds,
    ingest,
    mailer,
    scheduler,
    store,
    subscribers,
    templating,
)
from service.clock import BERLIN
from service.config import Settings, load_settings, mask_url
from service.errors import FeedsBaseUrlChangedError, IngestInputError, PartnerpostError
from service.sources import poller as sources_poller
from service.text import describe_validation_error

app = typer.Typer(
    help="partnerpost: feeds and digests of German–Ukrainian municipal partnership news.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
subscribers_app = typer.Typer(help="Subscribed municipalities.", no_args_is_help=True)
digest_app = typer.Typer(help="The email digest.", no_args_is_help=True)
feeds_app = typer.Typer(help="Feed files.", no_args_is_help=True)
articles_app = typer.Typer(help="Stored articles.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(feeds_app, name="feeds")
app.add_typer(articles_app, name="articles")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(digest_app, name="digest")

# soft_wrap: a long message stays one line in logs and pipes instead of wrapping at 80.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")
log = logging.getLogger(__name__)

EXIT_REJECTED = 1
EXIT_FAILURE = 2


def _settings(**overrides: object) -> Settings:
    """Settings from the environment; also sets up logging as they say."""
    try:
        settings = load_settings(**overrides)
    except PartnerpostError as exc:
        err.print(f"[red]configuration error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILURE) from exc
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


def _with_store(
    settings: Settings,
    work: Callable[[AsyncEngine, async_sessionmaker[AsyncSession]], Awaitable[T]],
    *,
    migrate: bool = True,
    create: bool = False,
) -> T:
    """Run `work` with a migrated store, closing the engine afterwards. Unless `create`,
    a SQLite database must exist already: a command run in the wrong folder says so
    instead of creating an empty database there."""
    if not create:
        _require_database(settings)

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
    except DBAPIError as exc:
        # A database failure is never "input rejected" (exit 1): the transaction that
        # failed was rolled back, and the operator can run the command again.
        log.debug("database error", exc_info=True)
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        err.print(
            f"[red]database error:[/] {escape(reason)}; the failed transaction was rolled "
            "back, run the command again",
        )
        raise typer.Exit(EXIT_FAILURE) from exc


def _require_database(settings: Settings) -> None:
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    path = Path(url.database).resolve()
    if not path.exists():
        err.print(
            f"[red]error:[/] no database at {escape(str(path))} "
            f"(PARTNERPOST_DATABASE_URL={escape(mask_url(settings.database_url))}, "
            f"working directory {escape(str(Path.cwd()))}). Run the command where the "
            "database is, set PARTNERPOST_DATABASE_URL, or create it with "
            "`partnerpost db upgrade`."
        )
        raise typer.Exit(EXIT_FAILURE)


@app.callback()
def _options(
    context: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    context.obj = verbose


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: PARTNERPOST_HOST].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on [default: PARTNERPOST_PORT].")
    ] = None,
) -> None:
    """Serve pages, feeds and the admin API, with the scheduler running.

    Links follow HOST and PORT unless PARTNERPOST_BASE_URL is set.
    """
    from service import serving
    from service.web import create_app

    given = {name: value for name, value in (("host", host), ("port", port)) if value is not None}
    settings = _settings(**given)
    try:
        settings.check_listen_address(settings.host)
    except PartnerpostError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILURE) from exc
    proxies = settings.trusted_proxy_list
    # X-Forwarded-For is believed only from the proxies named in the settings (never from
    # uvicorn's default 127.0.0.1: a local hop would let anyone choose their address); the
    # client is the right-most address of the chain that is not one of them.
    serving.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations."""

    async def work(engine: AsyncEngine, _: async_sessionmaker[AsyncSession]) -> None:
        await store.upgrade(engine)

    _with_store(_settings(), work, migrate=False, create=True)
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
    no_notify: Annotated[
        bool,
        typer.Option("--no-notify", help="A backfill: feeds show new articles, no digest does."),
    ] = False,
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
        report = await ingest.save(sessions, parsed, notify=not no_notify)
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

    report = _with_store(settings, work, create=True)
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
    """Write all feed files now (only those whose content changed)."""
    settings = _settings()

    async def work(
        engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> feeds.BuildReport | None:
        return await feeds.build_feeds(settings, engine, sessions, wait=True, force=force)

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


# --- subscribers ----------------------------------------------------------------------


@subscribers_app.command("import")
def subscribers_import(
    path: Annotated[Path, typer.Argument(help="CSV: name,email,ags,bundesland,partner,...")],
    encoding: Annotated[
        str | None,
        typer.Option(help="The file's encoding; default: UTF-8, else Windows-1252 (Excel)."),
    ] = None,
) -> None:
    """Import addresses the operator confirmed; bad rows are listed with their reasons."""
    settings = _settings()
    try:
        text, used = subscribers.decode_csv(path.read_bytes(), str(path), encoding)
    except OSError as exc:
        err.print(f"[red]error:[/] cannot read {escape(str(path))}: {exc.strerror}")
        raise typer.Exit(EXIT_FAILURE) from exc
    except PartnerpostError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILURE) from exc
    if encoding is None and used != subscribers.CSV_ENCODINGS[0]:
        err.print(f"{path} is not UTF-8: read it as {used}", markup=False)

    async def work(
        _: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> subscribers.ImportReport:
        return await subscribers.import_csv(sessions, text, store.utcnow(), str(path))

    report = _with_store(settings, work)
    out.print(
        f"{report.added} added, {report.unchanged} unchanged, {len(report.rejected)} rejected"
    )
    for line, reason in report.rejected:
        err.print(
            f"rejected {path}:line {line}: {reason}", style="yellow", markup=False, highlight=False
        )
    if report.rejected:
        raise typer.Exit(EXIT_REJECTED)


@subscribers_app.command("add")
def subscribers_add(
    name: Annotated[str, typer.Argument(help='The municipality, e.g. "Stadt Leipzig".')],
    email: Annotated[str, typer.Argument(help="Contact address (confirmed by you).")],
    ags: Annotated[str | None, typer.Option(help="Amtlicher Gemeindeschlüssel.")] = None,
    bundesland: Annotated[str | None, typer.Option(help="Bundesland.")] = None,
    partner: Annotated[str | None, typer.Option(help="Ukrainian partner municipality.")] = None,
    frequency: Annotated[str, typer.Option(help="daily, weekly or monthly.")] = "weekly",
    topic: Annotated[list[str] | None, typer.Option(help="Only this topic; repeatable.")] = None,
) -> None:
    """Subscribe an address the operator vouches for (no confirmation mail)."""
    settings = _settings()
    try:
        data = subscribers.SubscriberIn(
            name=name,
            email=email,
            ags=ags,
            bundesland=bundesland,
            partner=partner,
            frequency=frequency,
            topics=topic or [],
        )
    except ValidationError as exc:
        err.print(f"[red]invalid:[/] {escape(describe_validation_error(exc, 'row'))}")
        raise typer.Exit(EXIT_FAILURE) from exc

    async def work(_: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> bool:
        async with sessions() as session, session.begin():
            if await store.address_by_email(session, data.email) is not None:
                return False
        return (await subscribers.import_rows(sessions, [data], store.utcnow())).added == 1

    if not _with_store(settings, work):
        err.print(f"{data.email} is already subscribed", markup=False)
        raise typer.Exit(EXIT_REJECTED)
    out.print(f"{data.email} subscribed for {data.name} ({data.frequency})", markup=False)


@subscribers_app.command("list")
def subscribers_list() -> None:
    """Show municipalities with their addresses and each address's status."""
    settings = _settings()

    async def work(
        _: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> list[store.Subscriber]:
        async with sessions() as session:
            return list(await store.all_subscribers(session))

    table = Table("Kommune", "Partner", "AGS", "Häufigkeit", "Adresse", "Status")
    for subscriber in _with_store(settings, work):
        rows = [(a.email, str(a.status)) for a in subscriber.addresses] or [("", "")]
        for email, status in rows:
            table.add_row(
                subscriber.name,
                subscriber.partner or "",
                subscriber.ags or "",
                subscriber.frequency,
                email,
                status,
            )
    out.print(table)


def _personal_data(email: str) -> dict[str, Any] | None:
    async def work(
        _: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> dict[str, Any] | None:
        async with sessions() as session:
            return await consent.export(session, email)

    return _with_store(_settings(), work)


def _unknown_address(email: str) -> typer.Exit:
    err.print(f"no address {email!r}", markup=False)
    return typer.Exit(EXIT_REJECTED)


@subscribers_app.command("show")
def subscribers_show(
    email: Annotated[str, typer.Argument(help="The address.")],
) -> None:
    """Show an address with its consent record: when, which form text, from where."""
    data = _personal_data(email)
    if data is None:
        raise _unknown_address(email)
    municipality = data["municipality"]
    out.print(
        f"{data['email']}: {data['status']} ({municipality['name']}, {municipality['frequency']})",
        markup=False,
    )
    out.print(
        f"created {data['created_at']}, confirmed {data['confirmed_at'] or '-'}, "
        f"unsubscribed {data['unsubscribed_at'] or '-'}",
        markup=False,
    )
    if not data["consents"]:
        out.print("no consent recorded", markup=False)
    for record in data["consents"]:
        state = (
            f"confirmed {record['confirmed_at']}"
            if record["confirmed_at"]
            else f"voided {record['voided_at']}"
            if record["voided_at"]
            else "not confirmed"
        )
        origin = record["requested_from_hash"]
        out.print(
            f"consent via {record['source']}: requested {record['requested_at']}, "
            f"form text {record['form_version'] or '-'}, "
            f"client hash {origin[:16] + '…' if origin else '-'}, {state}",
            markup=False,
        )


@subscribers_app.command("export")
def subscribers_export(
    email: Annotated[str, typer.Argument(help="The address.")],
) -> None:
    """Print everything stored about an address as JSON (Art. 15 DSGVO)."""
    data = _personal_data(email)
    if data is None:
        raise _unknown_address(email)
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


@subscribers_app.command("forget")
def subscribers_forget(
    email: Annotated[str, typer.Argument(help="The address.")],
) -> None:
    """Erase an address and its history; only anonymous counts remain (Art. 17 DSGVO)."""
    settings = _settings()

    async def work(
        _: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> dict[str, int] | None:
        async with sessions() as session, session.begin():
            return await consent.forget(session, email)

    counts = _with_store(settings, work)
    if counts is None:
        raise _unknown_address(email)
    kept = sum(v for k, v in counts.items() if k.startswith("deliveries:"))
    out.print(
        f"erased {email.lower()}: its consents, requests and {kept} delivery record(s); "
        "anonymous counts kept",
        markup=False,
    )


@subscribers_app.command("remove")
def subscribers_remove(
    target: Annotated[str, typer.Argument(help="An address, or a municipality's name.")],
) -> None:
    """Remove one address, or a municipality with all its addresses and history."""
    settings = _settings()

    async def work(_: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> str | None:
        async with sessions() as session, session.begin():
            if "@" in target:
                address = await store.address_by_email(session, target)
                if address is None:
                    return None
                await session.delete(address)
                return f"address {address.email}"
            subscriber = await store.subscriber_by_name(session, target)
            if subscriber is None:
                return None
            await store.remove_subscriber(session, subscriber)
            return f"{subscriber.name} with {len(subscriber.addresses)} address(es)"

    removed = _with_store(settings, work)
    if removed is None:
        err.print(f"no subscriber or address {target!r}", markup=False)
        raise typer.Exit(EXIT_REJECTED)
    out.print(f"removed {removed}", markup=False)


# --- digest ---------------------------------------------------------------------------


def _parse_at(value: str | None) -> datetime:
    """`--at`: ISO 8601; without an offset it is Europe/Berlin time."""
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        err.print(f"[red]error:[/] --at {value!r} is no ISO 8601 date or time")
        raise typer.Exit(EXIT_FAILURE) from exc
    return moment.replace(tzinfo=BERLIN) if moment.tzinfo is None else moment


AtOption = Annotated[
    str | None,
    typer.Option("--at", help="Act as if it were this moment (ISO 8601; Berlin time)."),
]


@digest_app.command("preview")
def digest_preview(
    to: Annotated[str, typer.Option("--to", help="The subscribed address.")],
    at: AtOption = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the files.")] = Path("."),
) -> None:
    """Write the digest an address would get as HTML and .eml files; send nothing."""
    settings = _settings()
    moment = _parse_at(at)

    async def work(
        _: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> tuple[digest.RenderedDigest, mailer.Envelope] | None:
        return await digest.preview(settings, sessions, to, moment)

    try:
        result = _with_store(settings, work)
    except LookupError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILURE) from exc
    if result is None:
        out.print(f"nothing new for {to}: no digest would be sent", markup=False)
        return
    rendered, envelope = result
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"digest-{store.slugify(to)}"
    (out_dir / f"{stem}.html").write_text(rendered.html, encoding="utf-8")
    (out_dir / f"{stem}.eml").write_bytes(envelope.data)
    out.print(
        f"{rendered.subject}: {len(rendered.article_ids)} article(s) -> "
        f"{out_dir / stem}.html, {out_dir / stem}.eml",
        markup=False,
    )


@digest_app.command("run")
def digest_run(
    at: AtOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; change nothing.")
    ] = False,
) -> None:
    """Send every digest that is due (at --at), with a progress bar and a summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    settings = _settings()
    moment = _parse_at(at)

    async def work(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> int:
        """The exit code: 1 when a row failed permanently, 2 when nothing could be
        delivered (every row tried waits for a retry), else 0."""
        transport = mailer.create_transport(settings)
        runner = digest.DigestRunner(settings, sessions, transport)
        try:
            if dry_run:
                due = await runner.dry_run(moment)
                table = Table("Adresse", "Zeitraum", "Artikel")
                for email, period, count in due:
                    table.add_row(email, period, str(count))
                out.print(table)
                out.print(f"{len(due)} digest(s) would be sent", markup=False)
                return 0
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, runner.stopping.set)
            with Progress(
                TextColumn("Digests"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("send", total=None)
                report = await runner.run(
                    moment,
                    progress=lambda _: bar.advance(task),
                    on_start=lambda total: bar.update(task, total=total),
                )
            problem = report.problem()
            out.print(
                f"sent {report.sent}, skipped {report.skipped}, failed {report.failed}, "
                f"retrying {report.retrying}, uncertain {report.uncertain} "
                f"({', '.join(report.periods)})" + (f": {problem}" if problem else ""),
                markup=False,
            )
            if report.nothing_delivered:
                return EXIT_FAILURE
            return EXIT_REJECTED if report.failed else 0
        finally:
            await transport.close()

    code = _with_store(settings, work)
    if code:
        raise typer.Exit(code)


@app.command()
def worker() -> None:
    """Run the scheduler without HTTP: sources, digests, retries and feeds, until SIGTERM."""
    settings = _settings()

    async def work(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> None:
        transport = mailer.create_transport(settings)
        refresher = scheduler.FeedRefresher(settings, engine, sessions)
        runner = digest.DigestRunner(settings, sessions, transport)
        sender = confirmations.ConfirmationSender(settings, sessions, transport)
        poller = sources_poller.Poller(settings, sessions)
        jobs = scheduler.create_scheduler(settings, refresher, runner, sender, poller)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        jobs.start()
        log.info("worker %s started", runner.worker)
        try:
            await stop.wait()
            log.info("worker %s stopping", runner.worker)
        finally:
            jobs.pause()  # no new runs; the one going may finish its message
            finished = await _stop_within_grace(settings, runner, sender)
            await poller.stop()
            jobs.shutdown(wait=False)
            await refresher.wait_idle()
            await transport.close()
        if not finished:
            raise typer.Exit(EXIT_FAILURE)
        log.info("worker %s stopped", runner.worker)

    _with_store(settings, work, create=True)


async def _stop_within_grace(
    settings: Settings,
    runner: digest.DigestRunner,
    sender: confirmations.ConfirmationSender,
) -> bool:
    """Let the messages in flight finish and hand back unsent claims; False if that took
    longer than the grace period (the claims then expire by their lease)."""
    try:
        await asyncio.wait_for(
            asyncio.gather(runner.stop(), sender.stop()), settings.shutdown_grace_seconds
        )
    except TimeoutError:
        log.error(
            "worker %s: the message in flight did not finish within %ss",
            runner.worker,
            settings.shutdown_grace_seconds,
        )
        return False
    return True


# Last: the sub-app uses the helpers above.
from service.cli_sources import sources_app  # noqa: E402

app.add_typer(sources_app, name="sources")


def main() -> None:
    app()

"""Commands about the email digest: `digest preview | run`.

Owns no data. Imports `clock`, `store`, `mailer`, `digest` and `cli.common`.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from service.cli.common import (
    EXIT_FAILURE,
    EXIT_REJECTED,
    err,
    fail,
    lazy,
    out,
    settings_from_environment,
    with_store,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from service import clock, digest, mailer, store
else:
    clock, digest, mailer, store = lazy(
        "service.clock", "service.digest", "service.mailer", "service.store"
    )

digest_app = typer.Typer(help="The email digest.", no_args_is_help=True)

AtOption = Annotated[
    str | None,
    typer.Option("--at", help="Act as if it were this moment (ISO 8601; Berlin time)."),
]


def _parse_at(value: str | None) -> datetime:
    """`--at`: ISO 8601; without an offset it is Europe/Berlin time."""
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        fail(f"--at {value!r} is no ISO 8601 date or time", exc)
    return moment.replace(tzinfo=clock.BERLIN) if moment.tzinfo is None else moment


@digest_app.command("preview")
def digest_preview(
    to: Annotated[str, typer.Option("--to", help="The subscribed address.")],
    at: AtOption = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the files.")] = Path("."),
) -> None:
    """Write the digest an address would get as HTML and .eml files; send nothing."""
    settings = settings_from_environment()
    moment = _parse_at(at)

    async def work(
        _: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> tuple[digest.RenderedDigest, mailer.Envelope] | None:
        return await digest.preview(settings, sessions, to, moment)

    try:
        result = with_store(settings, work)
    except LookupError as exc:
        fail(str(exc), exc)
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


async def _show_due(runner: digest.DigestRunner, moment: datetime) -> int:
    """`--dry-run`: a table of what a run would send, changing nothing; exit code 0."""
    due = await runner.dry_run(moment)
    table = Table("Adresse", "Zeitraum", "Artikel")
    for email, period, count in due:
        table.add_row(email, period, str(count))
    out.print(table)
    out.print(f"{len(due)} digest(s) would be sent", markup=False)
    return 0


async def _send_due(runner: digest.DigestRunner, moment: datetime) -> int:
    """Send with a progress bar, then a summary. The exit code: 1 when a row failed
    permanently, 2 when nothing could be delivered (every row tried waits for a retry),
    else 0."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runner.stopping.set)
    with Progress(
        TextColumn("Digests"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
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


@digest_app.command("run")
def digest_run(
    at: AtOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; change nothing.")
    ] = False,
) -> None:
    """Send every digest that is due (at --at), with a progress bar and a summary."""
    settings = settings_from_environment()
    moment = _parse_at(at)

    async def work(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> int:
        """The exit code of the dry run or the run."""
        transport = mailer.create_transport(settings)
        runner = digest.DigestRunner(settings, sessions, transport)
        try:
            return await (_show_due if dry_run else _send_due)(runner, moment)
        finally:
            await transport.close()

    code = with_store(settings, work)
    if code:
        raise typer.Exit(code)

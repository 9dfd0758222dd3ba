"""Commands about the delivery ledger: `deliveries periods | list | show | retry`.

Owns no data. Imports `clock`, `store`, `deliveries` and `cli.common`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.table import Table

from service.cli.common import (
    EXIT_REJECTED,
    err,
    fail,
    in_session,
    in_transaction,
    lazy,
    out,
    settings_from_environment,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from service import clock, deliveries, store
else:
    clock, deliveries, store = lazy("service.clock", "service.deliveries", "service.store")

deliveries_app = typer.Typer(
    help="The delivery ledger: what was sent to whom, and retries.", no_args_is_help=True
)

PeriodOption = Annotated[
    str | None,
    typer.Option(
        "--period",
        help="FREQUENCY:YYYY-MM-DD (the day the digest was due, Berlin time, as `list` "
        "prints it) or a period key such as weekly:2026-11-23T06:00Z.",
    ),
]
_REPLY_WIDTH = 40
# `DELIVERY_STATES` and `RETRYING`, spelt out so that defining the options
# imports no database code (a test holds them equal to the store's).
DELIVERY_STATES = (
    "pending",
    "retrying",
    "sending",
    "sent",
    "failed",
    "uncertain",
    "empty",
    "superseded",
)
RETRYING = "retrying"
_REFUSALS_SHOWN = 20


def _when(moment: datetime | None) -> str:
    return moment.astimezone(clock.BERLIN).strftime("%Y-%m-%d %H:%M") if moment else "-"


def _reply(text: str | None) -> str:
    line = " ".join((text or "-").split())
    return line if len(line) <= _REPLY_WIDTH else line[: _REPLY_WIDTH - 1] + "…"


def _period_ref(period: str) -> deliveries.PeriodRef:
    try:
        return deliveries.PeriodRef.parse(period)
    except deliveries.PeriodNameError as exc:
        fail(str(exc), exc)


def _state(status: str | None, allowed: Sequence[str]) -> str | None:
    if status is not None and status not in allowed:
        fail(f"--status {status!r} is not one of {', '.join(allowed)}")
    return status


def _table(*headers: str) -> Table:
    """A table whose period, address and id columns are never cut short: the other
    columns wrap instead (these are what people copy into the next command)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in headers:
        table.add_column(header, no_wrap=header in ("Zeitraum", "Adresse", "ID"))
    return table


def _entries_table(entries: Sequence[store.HistoryEntry], *, with_address: bool) -> Table:
    """The rows as a table: period, (address,) status, attempts, last reply, when, id."""
    columns = ["Zeitraum", "Adresse", "Status", "Versuche", "Letzte Antwort", "Zeitpunkt", "ID"]
    table = _table(*(c for c in columns if with_address or c != "Adresse"))
    for entry in entries:
        cells = [
            deliveries.period_name(entry.period_key, entry.period_end),
            entry.email,
            entry.state,
            str(entry.attempts),
            _reply(entry.last_reply),
            _when(entry.when),
            str(entry.id),
        ]
        table.add_row(*(cells if with_address else cells[:1] + cells[2:]))
    return table


@deliveries_app.command("periods")
def deliveries_periods(
    limit: Annotated[int, typer.Option(min=1, help="How many periods, newest first.")] = 20,
) -> None:
    """Show the newest periods with their deliveries counted by status."""
    summaries = in_session(
        settings_from_environment(), lambda s: store.period_summaries(s, limit=limit)
    )
    shown = ("sent", "retrying", "failed", "uncertain", "empty")
    table = _table("Zeitraum", *shown, "gesamt")
    for summary in summaries:
        table.add_row(
            deliveries.period_name(summary.key, summary.end),
            *(str(summary.count(state)) for state in shown),
            str(summary.total),
        )
    out.print(table)


@deliveries_app.command("list")
def deliveries_list(
    period: PeriodOption = None,
    status: Annotated[
        str | None,
        typer.Option(help=f"Only this status: {', '.join(DELIVERY_STATES)}."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Only addresses containing this, e.g. leipzig.de.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Rows to skip (the next page).")] = 0,
) -> None:
    """Show deliveries, newest period first: period, address, status, attempts, last
    reply of the mail server, when sent or last tried."""
    ref = _period_ref(period) if period else None
    state = _state(status, DELIVERY_STATES)

    async def query(session: AsyncSession) -> tuple[list[store.HistoryEntry], int]:
        keys = tuple(await ref.keys(session)) if ref else ()
        if ref and not keys:
            return [], 0
        where = store.DeliveryFilter(
            period_keys=keys, states=(state,) if state else (), address=address
        )
        page = await store.find_deliveries(session, where, limit=limit, offset=offset)
        return page, await store.count_deliveries(session, where)

    entries, total = in_session(settings_from_environment(), query)
    if not entries:
        out.print(f"no deliveries match ({total} in all)", markup=False)
        return
    out.print(_entries_table(entries, with_address=True))
    more = f"; --offset {offset + len(entries)} for more" if offset + len(entries) < total else ""
    out.print(f"deliveries {offset + 1}–{offset + len(entries)} of {total}{more}", markup=False)


@deliveries_app.command("show")
def deliveries_show(
    email: Annotated[str, typer.Argument(help="The address.")],
    limit: Annotated[int, typer.Option(min=1, help="How many periods, newest first.")] = 100,
) -> None:
    """Show the delivery history of an address: period, status, attempts, last reply, when."""

    async def query(
        session: AsyncSession,
    ) -> tuple[store.Address, list[store.HistoryEntry]] | None:
        found = await store.address_by_email(session, email)
        if found is None:
            return None
        return found, await store.address_history(session, found.id, limit=limit)

    result = in_session(settings_from_environment(), query)
    if result is None:
        err.print(f"no address {email!r}", markup=False)
        raise typer.Exit(EXIT_REJECTED)
    address, history = result
    subscriber = address.subscriber
    out.print(
        f"{address.email}: {address.status} ({subscriber.name}, {subscriber.frequency}), "
        f"{len(history)} delivery record(s)",
        markup=False,
    )
    if history:
        out.print(_entries_table(history, with_address=False))


@deliveries_app.command("retry")
def deliveries_retry(
    ids: Annotated[list[int] | None, typer.Argument(help="Delivery ids (from `list`).")] = None,
    period: PeriodOption = None,
    status: Annotated[
        str,
        typer.Option(help="With --period: retry its `retrying` (default) or `failed` rows."),
    ] = RETRYING,
) -> None:
    """Send deliveries again at the scheduler's next tick: a retrying one now, a failed one
    with fresh attempts. A sent or possibly arrived digest is never sent twice."""
    if bool(ids) == bool(period):
        fail("give delivery ids or --period, not both")
    ref = _period_ref(period) if period else None
    state = _state(status, deliveries.RETRYABLE_STATES) or RETRYING

    async def change(session: AsyncSession) -> deliveries.RetryReport | None:
        now = store.utcnow()
        if ref is None:
            return await deliveries.retry_deliveries(session, ids or [], now)
        keys = await ref.keys(session)
        if not keys:
            return None
        return await deliveries.retry_period(session, keys, now, state)

    report = in_transaction(settings_from_environment(), change)
    if report is None:
        err.print(f"no period {period!r} in the ledger", markup=False)
        raise typer.Exit(EXIT_REJECTED)
    for refusal in report.refused[:_REFUSALS_SHOWN]:
        who = f" ({refusal.email})" if refusal.email else ""
        err.print(f"refused {refusal.delivery_id}{who}: {refusal.message}", markup=False)
    if len(report.refused) > _REFUSALS_SHOWN:
        err.print(f"… and {len(report.refused) - _REFUSALS_SHOWN} more refused", markup=False)
    due = report.retried or report.already_due
    out.print(report.summary() + (" (sent at the next digest run)" if due else ""), markup=False)
    if report.refused:
        raise typer.Exit(EXIT_REJECTED)

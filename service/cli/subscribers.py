"""Commands about subscribed municipalities and their addresses: `subscribers import |
add | list | show | export | forget | remove`.

Owns no data. Imports `errors`, `text`, `store`, `subscribers`, `consent` and
`cli.common`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
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
    with_store,
)
from service.errors import PartnerpostError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from service import consent, store, subscribers
else:
    consent, store, subscribers = lazy("service.consent", "service.store", "service.subscribers")

subscribers_app = typer.Typer(help="Subscribed municipalities.", no_args_is_help=True)


@subscribers_app.command("import")
def subscribers_import(
    path: Annotated[Path, typer.Argument(help="CSV: name,email,ags,bundesland,partner,...")],
    encoding: Annotated[
        str | None,
        typer.Option(help="The file's encoding; default: UTF-8, else Windows-1252 (Excel)."),
    ] = None,
) -> None:
    """Import addresses the operator confirmed; bad rows are listed with their reasons."""
    settings = settings_from_environment()
    try:
        text, used = subscribers.decode_csv(path.read_bytes(), str(path), encoding)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", exc)
    except PartnerpostError as exc:
        fail(str(exc), exc)
    if encoding is None and used != subscribers.CSV_ENCODINGS[0]:
        err.print(f"{path} is not UTF-8: read it as {used}", markup=False)

    async def work(
        _: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
    ) -> subscribers.ImportReport:
        return await subscribers.import_csv(sessions, text, store.utcnow(), str(path))

    report = with_store(settings, work)
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
    from pydantic import ValidationError

    from service.text import describe_validation_error

    settings = settings_from_environment()
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
        fail(describe_validation_error(exc, "row"), exc, label="invalid")

    async def work(_: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> bool:
        async with sessions() as session, session.begin():
            if await store.address_by_email(session, data.email) is not None:
                return False
        return (await subscribers.import_rows(sessions, [data], store.utcnow())).added == 1

    if not with_store(settings, work):
        err.print(f"{data.email} is already subscribed", markup=False)
        raise typer.Exit(EXIT_REJECTED)
    out.print(f"{data.email} subscribed for {data.name} ({data.frequency})", markup=False)


@subscribers_app.command("list")
def subscribers_list() -> None:
    """Show municipalities with their addresses and each address's status."""
    municipalities = in_session(settings_from_environment(), store.all_subscribers)
    table = Table("Kommune", "Partner", "AGS", "Häufigkeit", "Adresse", "Status")
    for subscriber in municipalities:
        columns = (subscriber.name, subscriber.partner or "", subscriber.ags or "")
        rows = [(a.email, str(a.status)) for a in subscriber.addresses] or [("", "")]
        for email, status in rows:
            table.add_row(*columns, subscriber.frequency, email, status)
    out.print(table)


def _personal_data(email: str) -> dict[str, Any]:
    """Everything stored about the address; exits with EXIT_REJECTED when there is none."""
    data = in_session(settings_from_environment(), lambda s: consent.export(s, email))
    if data is None:
        raise _unknown_address(email)
    return data


def _unknown_address(email: str) -> typer.Exit:
    """Say that there is no such address; the exit to raise."""
    err.print(f"no address {email!r}", markup=False)
    return typer.Exit(EXIT_REJECTED)


def _consent_line(record: dict[str, Any]) -> str:
    """One consent record: how it came, when, with which form text, and its state."""
    state = (
        f"confirmed {record['confirmed_at']}"
        if record["confirmed_at"]
        else f"voided {record['voided_at']}"
        if record["voided_at"]
        else "not confirmed"
    )
    origin = record["requested_from_hash"]
    return (
        f"consent via {record['source']}: requested {record['requested_at']}, "
        f"form text {record['form_version'] or '-'}, "
        f"client hash {origin[:16] + '…' if origin else '-'}, {state}"
    )


@subscribers_app.command("show")
def subscribers_show(
    email: Annotated[str, typer.Argument(help="The address.")],
) -> None:
    """Show an address with its consent record: when, which form text, from where."""
    data = _personal_data(email)
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
        out.print(_consent_line(record), markup=False)


@subscribers_app.command("export")
def subscribers_export(
    email: Annotated[str, typer.Argument(help="The address.")],
) -> None:
    """Print everything stored about an address as JSON (Art. 15 DSGVO)."""
    data = _personal_data(email)
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


@subscribers_app.command("forget")
def subscribers_forget(
    email: Annotated[str, typer.Argument(help="The address.")],
) -> None:
    """Erase an address and its history; only anonymous counts remain (Art. 17 DSGVO)."""
    counts = in_transaction(settings_from_environment(), lambda s: consent.forget(s, email))
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

    async def remove(session: AsyncSession) -> str | None:
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

    removed = in_transaction(settings_from_environment(), remove)
    if removed is None:
        err.print(f"no subscriber or address {target!r}", markup=False)
        raise typer.Exit(EXIT_REJECTED)
    out.print(f"removed {removed}", markup=False)

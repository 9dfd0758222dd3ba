"""Commands about console operators: `partnerpost operators add | list | remove`.

Owns no data. Imports `store`, `operators`, `clock` and `cli.common`.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.table import Table

from service.cli.common import (
    EXIT_REJECTED,
    err,
    in_session,
    in_transaction,
    lazy,
    out,
    settings_from_environment,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from service import clock, operators, store
else:
    clock, operators, store = lazy("service.clock", "service.operators", "service.store")

operators_app = typer.Typer(help="Who may sign in to the console.", no_args_is_help=True)

Email = Annotated[str, typer.Argument(help="The operator's email address.")]


def _reject(message: str) -> NoReturn:
    err.print(f"[red]rejected:[/] {message}", highlight=False)
    raise typer.Exit(EXIT_REJECTED)


def _read_password(from_stdin: bool) -> str:
    """One line of standard input, or asked twice without echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = typer.prompt("Password", hide_input=True)
    second = typer.prompt("Repeat the password", hide_input=True)
    if first != second:
        _reject("the two passwords differ")
    return str(first)


@operators_app.command("add")
def operators_add(
    email: Email,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from one line of stdin."),
    ] = False,
) -> None:
    """Add an operator; asks for the password (at least 12 characters)."""
    settings = settings_from_environment()
    try:
        address = operators.valid_email(email)
    except operators.InvalidOperatorError as exc:
        _reject(exc.reason)
    password = _read_password(password_stdin)
    try:
        operators.check_password(password)
    except operators.InvalidOperatorError as exc:
        _reject(f"the password {exc.reason}")

    async def add(session: AsyncSession) -> store.Operator:
        return await operators.add(session, address, password, store.utcnow())

    operator = in_transaction(settings, add)
    where = settings.link("verwaltung/anmelden")
    out.print(f"operator {operator.email} added; they sign in at {where}", highlight=False)


@operators_app.command("list")
def operators_list() -> None:
    """The operators, with when each was added and last signed in."""
    settings = settings_from_environment()
    found = in_session(settings, store.all_operators)
    if not found:
        out.print("no operators; add one with `partnerpost operators add EMAIL`")
        return
    table = Table("email", "added", "last sign-in")
    for operator in found:
        table.add_row(operator.email, _when(operator.created_at), _when(operator.last_sign_in_at))
    out.print(table)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(clock.BERLIN).strftime("%Y-%m-%d %H:%M") if moment else "–"


@operators_app.command("remove")
def operators_remove(email: Email) -> None:
    """Remove an operator; their console sessions end at once."""
    settings = settings_from_environment()

    async def remove(session: AsyncSession) -> store.Operator:
        return await store.remove_operator(session, email.strip())

    removed = in_transaction(settings, remove)
    out.print(f"operator {removed.email} removed; their sessions have ended", highlight=False)

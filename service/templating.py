"""Templating: the Jinja2 environment and German formatting shared by pages and mails.

Owns where templates are found (the package's copy in a wheel, `templates/` in a checkout)
and the filters that format for German readers. Imports nothing from the package.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import cache
from pathlib import Path

from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from service.clock import BERLIN

LOCALE = "de_DE"


def templates_dir() -> Path:
    """`service/templates` inside an installed wheel, else the checkout's `templates/`."""
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


def german_date(value: date | datetime) -> str:
    """`24. Februar 2024`, in Berlin time for datetimes."""
    if isinstance(value, datetime):
        value = value.astimezone(BERLIN).date()
    return format_date(value, format="d. MMMM y", locale=LOCALE)


def german_datetime(value: datetime) -> str:
    """`24. Februar 2024, 07:00 Uhr` in Berlin time."""
    return format_datetime(value, "d. MMMM y, HH:mm 'Uhr'", tzinfo=BERLIN, locale=LOCALE)


def german_number(value: int) -> str:
    """`11.000`."""
    return format_decimal(value, locale=LOCALE)


@cache
def environment() -> Environment:
    """The one Jinja2 environment; autoescaping HTML, strict about undefined names."""
    env = Environment(
        loader=FileSystemLoader(templates_dir()),
        autoescape=select_autoescape(["html", "html.j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["german_date"] = german_date
    env.filters["german_datetime"] = german_datetime
    env.filters["german_number"] = german_number
    return env

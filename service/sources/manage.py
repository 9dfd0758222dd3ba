"""Managing sources: what an operator gives to register one, and what is shown of one.

Owns `SourceIn` (the validated input of `sources add` and `POST /api/sources`) and
`SourceView` (what `sources list|show` and the admin API show), and the operations both
entry points share. Imports `store`, `clock`, `text` and the package's `records` and
`parse`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.sources.parse import FORMATS
from service.store import sources as records
from service.text import one_line

MIN_EVERY = timedelta(minutes=1)
MAX_EVERY = timedelta(days=7)
_EVERY = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

Word = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(one_line)]


def parse_every(value: str) -> timedelta:
    """An interval like `15m`, `2h`, `1d` or `900` (seconds), between a minute and a week."""
    match = _EVERY.match(value)
    if match is None:
        raise ValueError(f"{value!r} is no interval like 15m, 2h or 1d")
    every = timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if not MIN_EVERY <= every <= MAX_EVERY:
        raise ValueError(f"{value!r} is not between 1m and 7d")
    return every


def format_every(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class SourceIn(BaseModel):
    """A source as an operator registers it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: str = Field(max_length=2000, pattern=r"^https?://[^\s/]+\S*$")
    name: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(one_line)] | None = (
        Field(default=None, description="Defaults to the URL's host.")
    )
    format: str = Field(default="auto", description=f"One of {', '.join(FORMATS)}.")
    every: str = Field(default="15m", description="How often: 15m, 2h, 1d; at least 1m.")
    topics: list[Word] = Field(default_factory=list, max_length=20)
    only_mentioning: list[Word] = Field(
        default_factory=list,
        max_length=100,
        description="Keep only entries mentioning one of these words or a subscribed "
        "municipality's partner town; empty keeps every entry.",
    )

    @field_validator("url")
    @classmethod
    def _parsable(cls, value: str) -> str:
        try:
            host = urlsplit(one_line(value)).hostname
        except ValueError as exc:  # "Invalid IPv6 URL" for a stray bracket, for instance
            raise ValueError(f"is no URL ({exc})") from None
        if not host:
            raise ValueError("has no host name")
        return value

    @field_validator("name")
    @classmethod
    def _addressable(cls, value: str | None) -> str | None:
        # The name is the last part of `/api/sources/{name}`: a slash would make it unreachable.
        if value is not None and "/" in value:
            raise ValueError("must not contain '/'")
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"{value!r} is no format; use one of {', '.join(FORMATS)}")
        return value

    @field_validator("every")
    @classmethod
    def _interval(cls, value: str) -> str:
        parse_every(value)
        return value

    @property
    def display_name(self) -> str:
        return self.name or urlsplit(self.url).hostname or self.url


class SourceView(BaseModel):
    """A source and how its polling went, as the CLI and the admin API show it."""

    name: str
    url: str
    format: str
    every: str
    status: str
    topics: list[str]
    only_mentioning: list[str]
    last_fetch: datetime | None
    last_success: datetime | None
    http_status: int | None
    items: int | None
    articles: int
    next_fetch: datetime | None
    failures: int
    last_error: str | None
    notes: str | None

    @classmethod
    def of(cls, source: records.Source, articles: int) -> SourceView:
        return cls(
            name=source.name,
            url=source.url,
            format=source.format,
            every=format_every(source.every_seconds),
            status=source.status,
            topics=list(source.topics or []),
            only_mentioning=list(source.only_mentioning or []),
            last_fetch=source.last_fetch_at,
            last_success=source.last_success_at,
            http_status=source.last_status,
            items=source.items,
            articles=articles,
            next_fetch=source.next_fetch_at if source.status == "active" else None,
            failures=source.failures,
            last_error=source.last_error,
            notes=source.last_notes,
        )


async def add(
    sessions: async_sessionmaker[AsyncSession], data: SourceIn, now: datetime
) -> SourceView:
    async with sessions() as session, session.begin():
        source = await records.add_source(
            session,
            name=data.display_name,
            url=data.url,
            fmt=data.format,
            every=parse_every(data.every),
            now=now,
            topics=data.topics,
            only_mentioning=data.only_mentioning,
        )
        return SourceView.of(source, 0)


async def views(
    sessions: async_sessionmaker[AsyncSession], names: Sequence[str] | None = None
) -> list[SourceView]:
    """Every source (or those named, `SourceNotFoundError` for an unknown one) by name."""
    async with sessions() as session:
        counts = await records.article_counts(session)
        if names is None:
            chosen = list(await records.all_sources(session))
        else:
            chosen = [await records.get_source(session, name) for name in names]
        return [SourceView.of(s, counts.get(s.id, 0)) for s in chosen]


async def set_status(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    status: records.SourceStatus,
    now: datetime,
) -> SourceView:
    async with sessions() as session, session.begin():
        source = await records.get_source(session, name)
        records.set_status(source, status, now)
        counts = await records.article_counts(session)
        return SourceView.of(source, counts.get(source.id, 0))


async def remove(sessions: async_sessionmaker[AsyncSession], name: str) -> int:
    """Remove a source; returns how many of its articles stay in the store."""
    async with sessions() as session, session.begin():
        source = await records.get_source(session, name)
        kept = (await records.article_counts(session)).get(source.id, 0)
        await records.remove_source(session, source)
        return kept

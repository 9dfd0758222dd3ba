"""One article as input: the validated shape every format is read into, and what parsing yields.

`ArticleIn` is also the admin API's request body; `ArticleEdit` checks an operator's edit
by the same rules. Its stable key is, in this order: the
`key` the input gives; its source URL; else `<publication date>/<slug of the first title
it was imported with>`. Imports `store`, `slugs`, `clock` and `text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Annotated, Any

import nh3
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from service import slugs, store
from service.clock import BERLIN
from service.text import CONTROL_CHARS, describe_validation_error, no_control_chars, single_line

MAX_TITLE = 300
MAX_TEASER = 5_000
MAX_CAPTION = 500
MAX_BODY = 200_000


def _clean(value: str) -> str:
    return single_line(no_control_chars(value))


def _sanitize_html(value: str) -> str:
    return nh3.clean(no_control_chars(value))


# Length limits come first so that a 10 MB value is refused before it is scanned.
Key = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_clean)]
Title = Annotated[str, Field(min_length=1, max_length=MAX_TITLE), AfterValidator(_clean)]
Teaser = Annotated[str, Field(min_length=1, max_length=MAX_TEASER), AfterValidator(_clean)]
Place = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_clean)]
Caption = Annotated[str, Field(max_length=MAX_CAPTION), AfterValidator(_clean)]
Topic = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_clean)]
Body = Annotated[str, Field(max_length=MAX_BODY), AfterValidator(_sanitize_html)]
HttpUrl = Annotated[str, Field(max_length=2000, pattern=r"^https?://\S+$")]


class ArticleIn(BaseModel):
    """One article as editors submit it (JSON, NDJSON, admin API, or a parsed listing)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    key: Key | None = None
    title: Title
    teaser: Teaser
    place: Place
    published: datetime | date = Field(
        description="ISO date or datetime; without an offset it is Europe/Berlin time."
    )
    body: Body | None = Field(
        default=None, description="HTML; sanitised, scripts and event handlers removed."
    )
    image_caption: Caption | None = None
    image_url: HttpUrl | None = None
    source_url: HttpUrl | None = None
    topics: list[Topic] = Field(default_factory=list, max_length=20)

    @field_validator("published")
    @classmethod
    def _plausible_year(cls, value: datetime | date) -> datetime | date:
        if not 1990 <= value.year <= 2100:
            raise ValueError(f"year {value.year} is not plausible")
        return value

    def published_at(self) -> datetime:
        """Publication time, timezone-aware; a bare date means midnight in Berlin."""
        value = self.published
        if not isinstance(value, datetime):
            return datetime.combine(value, time(), BERLIN)
        return value.replace(tzinfo=BERLIN) if value.tzinfo is None else value

    def to_data(self, notify: bool = True) -> store.ArticleData:
        published_at = self.published_at()
        key = self.key or self.source_url
        if key is None:
            local_day = published_at.astimezone(BERLIN).date().isoformat()
            # A title with nothing to spell (emoji only) must not share "artikel" with others.
            key = f"{local_day}/{slugs.slug_text(self.title) or slugs.text_hash(self.title)}"
        return store.ArticleData(
            key=key,
            title=self.title,
            teaser=self.teaser,
            place=self.place,
            published_at=published_at,
            body=self.body or None,
            image_caption=self.image_caption or None,
            image_url=self.image_url,
            source_url=self.source_url,
            topics=tuple(dict.fromkeys(self.topics)),
            notify=notify,
        )


class ArticleEdit(BaseModel):
    """What an operator may change of a stored article, by `ArticleIn`'s rules."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: Title
    teaser: Teaser
    topics: list[Topic] = Field(default_factory=list, max_length=20)


# --- results --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """An item that was not imported, with where it stands and why."""

    line: int
    item: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.item}: {self.reason}"


@dataclass(frozen=True)
class Parsed:
    """What a parser found: valid articles with their lines, rejections, a page heading."""

    articles: list[tuple[int, ArticleIn]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    heading: str | None = None


@dataclass(frozen=True)
class Duplicate:
    """An item whose key an earlier item of the same input had: the later one is saved."""

    line: int
    earlier: int
    key: str

    def __str__(self) -> str:
        return (
            f"line {self.line}: same key {self.key!r} as line {self.earlier}; "
            f"line {self.line} is imported, line {self.earlier} is not"
        )


def validate(line: int, label: str, raw: Any) -> tuple[int, ArticleIn] | Rejection:
    try:
        return line, ArticleIn.model_validate(raw)
    except ValidationError as exc:
        return Rejection(line, label, describe_validation_error(exc, "article"))


def item_label(title: str) -> str:
    title = CONTROL_CHARS.sub("?", single_line(title))
    return repr(title if len(title) <= 60 else title[:57] + "...")

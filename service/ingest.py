"""Ingest: turn a listing page (text or HTML), JSON or NDJSON into stored articles.

Owns the input formats, the validation of one article (`ArticleIn`, also the admin API's
request body) and the stable key. Each item is validated on its own: a bad one is reported
with its line and skipped, the good ones are saved, and nothing stored is deleted.
Imports `store` and `errors`.

The stable key of an article is, in this order: the `key` the input gives; its source URL;
else `<publication date>/<slug of the first title it was imported with>`. A later import
whose key is new but whose day and place match a stored article with the same title or the
same teaser updates that article (a typo fix), keeping its key, slug and feed id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urljoin

import nh3
from babel.dates import get_month_names
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import slugs, store
from service.clock import BERLIN
from service.errors import IngestInputError
from service.text import CONTROL_CHARS, describe_validation_error, no_control_chars, single_line

MAX_TITLE = 300
MAX_TEASER = 5_000
MAX_CAPTION = 500
MAX_BODY = 200_000
# A caption or title is a line or two; anything longer is a teaser that lost its date line.
_SHORT_PARAGRAPH = 250
_MONTHS = {
    name.lower(): number
    for locale in ("de", "de_AT")
    for number, name in get_month_names("wide", locale=locale).items()
}
_DATELINE = re.compile(
    r"^(?P<place>[^,\n]{1,100}),\s+(?P<day>\d{1,2})\.\s+(?P<month>[^\W\d_]+)\s+"
    r"(?P<year>\d{4})\.\s*(?P<rest>.*)$",
    re.DOTALL,
)


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


@dataclass
class IngestReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    heading: str | None = None
    duplicates: list[Duplicate] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def _validate(line: int, label: str, raw: Any) -> tuple[int, ArticleIn] | Rejection:
    try:
        return line, ArticleIn.model_validate(raw)
    except ValidationError as exc:
        return Rejection(line, label, describe_validation_error(exc, "article"))


def _label(title: str) -> str:
    title = CONTROL_CHARS.sub("?", single_line(title))
    return repr(title if len(title) <= 60 else title[:57] + "...")


# --- listing text ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Paragraph:
    line: int
    text: str
    link: str | None = None
    image: str | None = None


def _text_paragraphs(text: str) -> list[_Paragraph]:
    paragraphs: list[_Paragraph] = []
    lines: list[str] = []
    start = 0
    for number, line in enumerate([*text.splitlines(), ""], start=1):
        if line.strip():
            if not lines:
                start = number
            lines.append(line.strip())
        elif lines:
            paragraphs.append(_Paragraph(start, " ".join(lines)))
            lines = []
    return paragraphs


def _dateline(paragraph: str) -> re.Match[str] | None:
    # Bounded so a 10 MB paragraph is not scanned by the regex.
    return _DATELINE.match(paragraph[:200]) and _DATELINE.match(paragraph)


def _parse_dateline(match: re.Match[str]) -> date:
    month_name = match["month"]
    month = _MONTHS.get(month_name.lower())
    if month is None:
        raise ValueError(f"unknown month {month_name!r} in the date line")
    try:
        return date(int(match["year"]), month, int(match["day"]))
    except ValueError as exc:
        raise ValueError(
            f"no such date: {match['day']}. {month_name} {match['year']} ({exc})"
        ) from None


def _group_items(paragraphs: list[_Paragraph], base_url: str | None) -> Parsed:
    """Group paragraphs into items: [caption] title teaser, the teaser opening with a date
    line. What stands between items and is not part of one is page furniture (navigation,
    headings) when short, and a rejected item when it holds a long paragraph."""
    parsed = Parsed()
    pending: list[_Paragraph] = []
    heading: str | None = None
    first = True

    def leftover(group: list[_Paragraph], where: str) -> None:
        if any(len(p.text) > _SHORT_PARAGRAPH for p in group):
            parsed.rejections.append(
                Rejection(
                    group[0].line,
                    _label(group[0].text),
                    f"the paragraphs from line {group[0].line} to {group[-1].line} "
                    f"{where} are no article: no paragraph opens with a date line like "
                    "'Bonn, 24. Februar 2024.'",
                )
            )

    for paragraph in paragraphs:
        match = _dateline(paragraph.text)
        if match is None:
            pending.append(paragraph)
            continue
        if not pending:
            parsed.rejections.append(
                Rejection(paragraph.line, _label(paragraph.text), "teaser without a title")
            )
            continue
        title = pending.pop()
        caption = None
        if pending and len(pending[-1].text) <= _SHORT_PARAGRAPH:
            caption = pending.pop()
        if first and pending:
            if all(len(p.text) <= _SHORT_PARAGRAPH for p in pending):
                heading = pending[-1].text
            leftover(pending, "before the first article")
        elif pending:
            leftover(pending, f"before the article at line {title.line}")
        first = False
        pending = []
        try:
            published = _parse_dateline(match)
        except ValueError as exc:
            parsed.rejections.append(Rejection(paragraph.line, _label(title.text), str(exc)))
            continue
        raw = {
            "title": title.text,
            "teaser": match["rest"],
            "place": match["place"],
            "published": published,
            "image_caption": caption.text if caption else None,
            "image_url": caption.image if caption else None,
            "source_url": urljoin(base_url or "", title.link) if title.link else None,
        }
        result = _validate(title.line, _label(title.text), raw)
        if isinstance(result, Rejection):
            parsed.rejections.append(result)
        else:
            parsed.articles.append(result)
    if pending and not first:
        leftover(pending, "after the last article")
    elif pending:
        leftover(pending, "of the input")
    return Parsed(parsed.articles, parsed.rejections, heading)


def parse_listing_text(text: str) -> Parsed:
    """Parse the listing page as text (the format of the demo file)."""
    return _group_items(_text_paragraphs(text), None)


# --- listing HTML ---------------------------------------------------------------------

_BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "figcaption", "dt", "dd", "div"}
_SKIPPED = {"script", "style", "nav", "noscript", "template", "header", "footer", "form"}


def parse_listing_html(html: str, base_url: str | None = None) -> Parsed:
    """Parse the listing as an HTML page: the same items, with links and image addresses.

    Block elements become paragraphs; an `<img alt>` without a `<figcaption>` becomes the
    caption paragraph; a title's first link is the article's source URL; `<h1>` is the
    page heading.
    """
    from lxml import html as lxml_html

    try:
        document = lxml_html.document_fromstring(html)
    except Exception as exc:  # lxml raises several unrelated types for broken input
        raise IngestInputError("HTML", f"not an HTML document ({exc})") from exc
    for element in list(document.iter(*_SKIPPED)):
        element.drop_tree()
    paragraphs: list[_Paragraph] = []
    for element in document.iter():
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag == "img":
            alt = (element.get("alt") or "").strip()
            figure = next((a for a in element.iterancestors("figure")), None)
            has_caption = figure is not None and figure.find(".//figcaption") is not None
            if alt and not has_caption:
                src = element.get("src")
                paragraphs.append(
                    _Paragraph(
                        element.sourceline or 0,
                        alt,
                        image=urljoin(base_url or "", src) if src else None,
                    )
                )
            continue
        if tag not in _BLOCKS or any(
            child.tag in _BLOCKS for child in element.iter() if child is not element
        ):
            continue
        text = single_line(element.text_content())
        if not text:
            continue
        link = element.find(".//a[@href]")
        if link is None:
            link = next((a for a in element.iterancestors("a") if a.get("href")), None)
        image = None
        if tag == "figcaption":
            img = (
                element.getparent().find(".//img[@src]")
                if element.getparent() is not None
                else None
            )
            image = urljoin(base_url or "", img.get("src")) if img is not None else None
        paragraphs.append(
            _Paragraph(
                element.sourceline or 0,
                text,
                link=link.get("href") if link is not None else None,
                image=image,
            )
        )
    parsed = _group_items(paragraphs, base_url)
    h1 = document.find(".//h1")
    heading = single_line(h1.text_content()) if h1 is not None else parsed.heading
    return Parsed(parsed.articles, parsed.rejections, heading or None)


# --- JSON and NDJSON ------------------------------------------------------------------


# Python's parser recurses once per nesting level; an article is three levels deep.
_TOO_DEEP = "JSON nested too deeply (an article is an object, at most inside one array)"


def _json_items(document: Any) -> Iterable[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and isinstance(document.get("articles"), list):
        return list(document["articles"])
    return [document]


def parse_json(text: str) -> Parsed:
    """A JSON array of articles, an object with an `articles` array, or one article."""
    try:
        document = json.loads(text)
    except RecursionError as exc:
        raise IngestInputError("JSON", _TOO_DEEP) from exc
    except json.JSONDecodeError as exc:
        if exc.lineno > 1 and all(
            line.lstrip().startswith("{") for line in text.splitlines() if line.strip()
        ):
            return parse_ndjson(text)
        raise IngestInputError(
            "JSON", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    parsed = Parsed()
    for index, raw in enumerate(_json_items(document), start=1):
        result = _validate(index, f"article {index}", raw)
        if isinstance(result, Rejection):
            parsed.rejections.append(result)
        else:
            parsed.articles.append(result)
    return parsed


def parse_ndjson(text: str) -> Parsed:
    """One JSON object per line; a broken line is rejected, the others are imported."""
    parsed = Parsed()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except RecursionError:
            parsed.rejections.append(Rejection(number, "JSON line", _TOO_DEEP))
            continue
        except json.JSONDecodeError as exc:
            parsed.rejections.append(
                Rejection(number, "JSON line", f"invalid JSON at column {exc.colno}: {exc.msg}")
            )
            continue
        result = _validate(number, f"article on line {number}", raw)
        if isinstance(result, Rejection):
            parsed.rejections.append(result)
        else:
            parsed.articles.append(result)
    return parsed


Format = Literal["text", "html", "json", "ndjson"]
FORMATS: tuple[Format, ...] = ("text", "html", "json", "ndjson")


def check_format(name: str) -> Format:
    for known in FORMATS:
        if name == known:
            return known
    raise IngestInputError("--format", f"unknown format {name!r}; use one of {', '.join(FORMATS)}")


def detect_format(text: str, name: str = "") -> Format:
    suffix = Path(name.split("?")[0]).suffix.lower()
    if suffix in {".ndjson", ".jsonl"}:
        return "ndjson"
    if suffix == ".json":
        return "json"
    if suffix in {".html", ".htm"}:
        return "html"
    start = text.lstrip()[:1]
    if start in {"[", "{"}:
        return "json"
    if start == "<":
        return "html"
    return "text"


def parse(text: str, fmt: Format, base_url: str | None = None) -> Parsed:
    if fmt == "html":
        return parse_listing_html(text, base_url)
    if fmt == "json":
        return parse_json(text)
    if fmt == "ndjson":
        return parse_ndjson(text)
    return parse_listing_text(text)


def decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestInputError(
            source, f"not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from exc


# --- saving ---------------------------------------------------------------------------


def _last_of_each_key(
    parsed: Parsed, notify: bool
) -> tuple[list[store.ArticleData], list[Duplicate]]:
    """One article per key, the last one given (where it stands), and what it replaced."""
    by_key: dict[str, tuple[int, store.ArticleData]] = {}
    duplicates: list[Duplicate] = []
    for line, article in parsed.articles:
        data = article.to_data(notify)
        earlier = by_key.pop(data.key, None)
        if earlier is not None:
            duplicates.append(Duplicate(line, earlier[0], data.key))
        by_key[data.key] = (line, data)
    return [data for _, data in by_key.values()], duplicates


async def save(
    sessions: async_sessionmaker[AsyncSession],
    parsed: Parsed,
    now: datetime | None = None,
    *,
    notify: bool = True,
) -> IngestReport:
    """Save the parsed articles in one transaction; a page heading is kept as a site fact.

    `now` is the import time recorded on the articles (the current time when None).
    With `notify=False` new articles are a backfill that no digest carries."""
    articles, duplicates = _last_of_each_key(parsed, notify)
    report = IngestReport(
        rejections=list(parsed.rejections), heading=parsed.heading, duplicates=duplicates
    )
    async with sessions() as session, session.begin():
        for article in articles:
            outcome, _ = await store.save_article(session, article, now)
            if outcome is store.SaveOutcome.CREATED:
                report.created += 1
            elif outcome is store.SaveOutcome.UPDATED:
                report.updated += 1
            else:
                report.unchanged += 1
        # A page none of whose items could be read may not be the listing at all; a heading
        # is unchecked page text, kept to one line that feeds and mail headers can carry.
        heading = single_line(CONTROL_CHARS.sub(" ", parsed.heading or ""))[:MAX_TITLE]
        if heading and articles:
            await store.set_fact(session, store.LISTING_HEADING, heading)
    return report

"""Reading what a source sent: detecting its format and turning its entries into articles.

Owns format detection (content type, then content) and the mapping of feed entries to
`ingest.ArticleIn`: RSS and Atom through feedparser, JSON Feed by its specification, the
listing page, JSON and NDJSON through `ingest`'s own parsers. An entry's stable key is its
id/guid, else its link, else a hash of title and date; its HTML is sanitised and its links
made absolute; a date without a zone is Berlin time; an entry without a title or a date
is rejected with the reason. Imports `ingest`, `errors`, `clock`, `text`.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urljoin

import feedparser
import nh3
from pydantic import ValidationError

from service import ingest
from service.clock import BERLIN
from service.errors import IngestInputError
from service.text import CONTROL_CHARS, describe_validation_error, single_line

SourceFormat = Literal["html", "rss", "atom", "jsonfeed", "json", "ndjson", "text"]
FORMATS: tuple[str, ...] = ("auto", "html", "rss", "atom", "jsonfeed", "json", "ndjson", "text")
_FEEDS = ("rss", "atom")
_TEASER = 600  # characters of a long text kept as the teaser
_KEY = 500  # longest key the store takes; longer ids are hashed
_EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
_AHEAD = timedelta(days=7)
_CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class SourceParse:
    """What one fetch held: the articles, rejected entries, and remarks for the operator."""

    format: SourceFormat
    parsed: ingest.Parsed
    notes: list[str] = field(default_factory=list)


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise IngestInputError("--format", f"unknown format {name!r}; use one of {FORMATS}")
    return name


def detect(content: bytes, content_type: str | None, url: str = "") -> SourceFormat:
    """The format of a body: its content type when that is specific, else its content."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if "rss" in kind or "rdf" in kind:
        return "rss"
    if "atom" in kind:
        return "atom"
    if kind == "application/feed+json":
        return "jsonfeed"
    if "ndjson" in kind or "jsonl" in kind or "json-seq" in kind:
        return "ndjson"
    return _sniff(content, url)


def _sniff(content: bytes, url: str) -> SourceFormat:
    head = content[:4096].decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    lowered = head.lower()
    if lowered.startswith("<"):
        # Past the XML declaration, comments and doctype to the root element.
        root = re.search(r"<(?![?!])([\w:.-]+)", head)
        name = root.group(1).lower() if root else ""
        if name in ("rss", "rdf:rdf"):
            return "rss"
        if name == "feed":
            return "atom"
        return "html"
    if lowered.startswith("{") and "jsonfeed.org/version" in lowered:
        return "jsonfeed"
    detected = ingest.detect_format(head, url)
    return "text" if detected == "text" else detected


def decode(content: bytes, content_type: str | None, notes: list[str]) -> str:
    """The body as text: by its declared charset (UTF-8 when none), else as Windows-1252
    with a note (a server that declares UTF-8 and sends Latin-1 is common)."""
    match = _CHARSET.search(content_type or "")
    declared = match.group(1) if match else "utf-8"
    try:
        return content.decode("utf-8-sig" if declared.lower() in ("utf-8", "utf8") else declared)
    except (UnicodeDecodeError, LookupError) as exc:
        notes.append(f"the body is not {declared} as declared ({exc}); read as Windows-1252")
        return content.decode("cp1252", "replace")


def parse_source(
    content: bytes,
    content_type: str | None,
    fmt: str,
    url: str,
    *,
    place: str,
) -> SourceParse:
    """Parse a fetched body as `fmt` ("auto" detects it); `place` is the place of entries
    that name none (a feed has no such field). `IngestInputError` when nothing is readable."""
    chosen: SourceFormat = detect(content, content_type, url) if fmt == "auto" else fmt  # type: ignore[assignment]
    notes: list[str] = []
    if chosen in _FEEDS:
        parsed = _parse_feed(content, content_type, url, place, notes)
    elif chosen == "jsonfeed":
        parsed = _parse_json_feed(decode(content, content_type, notes), url, place)
    else:
        text = decode(content, content_type, notes)
        parsed = ingest.parse(text, ingest.check_format(chosen), base_url=url)
    return SourceParse(chosen, parsed, notes)


# --- one entry ------------------------------------------------------------------------


def text_of(value: str) -> str:
    """The text of an HTML fragment on one line, without tags or control characters."""
    return single_line(html.unescape(nh3.clean(CONTROL_CHARS.sub(" ", value), tags=set())))


def absolute_links(fragment: str, base: str) -> str:
    """An HTML fragment with every link and image address made absolute against `base`."""
    from lxml import html as lxml_html

    if not fragment.strip():
        return fragment
    root = lxml_html.fragment_fromstring(fragment, create_parent="div")
    root.make_links_absolute(base, resolve_base_href=True)
    inner = (root.text or "") + "".join(
        lxml_html.tostring(child, encoding="unicode") for child in root
    )
    return inner


def _teaser(summary: str | None, content: str | None, title: str) -> str:
    text = text_of(summary or "") or text_of(content or "")
    if len(text) > _TEASER:
        text = text[:_TEASER].rsplit(" ", 1)[0] + " …"
    return text or title


def parse_date(value: str | None) -> datetime | None:
    """A feed date (RFC 822 or ISO 8601); one without a zone is Berlin time."""
    if not value or not value.strip():
        return None
    value = value.strip()
    moment: datetime | None = None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            return None
    return moment.replace(tzinfo=BERLIN) if moment.tzinfo is None else moment


def stable_key(entry_id: str | None, link: str | None, title: str, date: str, feed: str) -> str:
    """The entry's id (one that is not globally unique, like "17", within its feed's URL),
    else its link, else a hash of title and date."""
    if entry_id and entry_id.strip():
        key = entry_id.strip()
        if ":" not in key:
            key = f"{feed}#{key}"
    elif link:
        key = link
    else:
        key = "sha256:" + hashlib.sha256(f"{title}\n{date}".encode()).hexdigest()
    if len(key) > _KEY:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


@dataclass(frozen=True)
class _Entry:
    """The fields of one feed entry, whatever the feed's format."""

    index: int
    entry_id: str | None
    title: str
    link: str | None
    published: datetime | None
    date_text: str
    summary: str | None
    content: str | None
    image: str | None


def _article(
    entry: _Entry, feed_url: str, place: str
) -> tuple[int, ingest.ArticleIn] | ingest.Rejection:
    label = repr(entry.title[:60]) if entry.title else f"entry {entry.index}"
    if not entry.title:
        return ingest.Rejection(entry.index, label, "the entry has no title")
    if entry.published is None:
        reason = f"unreadable date {entry.date_text!r}" if entry.date_text else "no date"
        return ingest.Rejection(entry.index, label, f"the entry has {reason}")
    if not _plausible(entry.published):
        reason = f"the entry has an implausible date {entry.date_text or str(entry.published)!r}"
        return ingest.Rejection(entry.index, label, reason)
    link = urljoin(feed_url, entry.link) if entry.link else None
    raw: dict[str, Any] = {
        "key": stable_key(entry.entry_id, link, entry.title, entry.date_text, feed_url),
        "title": entry.title,
        "teaser": _teaser(entry.summary, entry.content, entry.title),
        "place": place,
        "published": entry.published,
        "body": absolute_links(entry.content, link or feed_url) if entry.content else None,
        "source_url": link if link and link.startswith(("http://", "https://")) else None,
        "image_url": entry.image if entry.image and entry.image.startswith("http") else None,
    }
    try:
        return entry.index, ingest.ArticleIn.model_validate(raw)
    except ValidationError as exc:
        return ingest.Rejection(entry.index, label, describe_validation_error(exc, "entry"))


def _plausible(published: datetime) -> bool:
    """A news date: not before 1990 (a year like 0001 is a feed's placeholder) and at most
    a week ahead (an article dated years ahead would head every feed until then)."""
    return _EARLIEST <= published <= datetime.now(UTC) + _AHEAD


def _collect(entries: Iterable[_Entry], feed_url: str, place: str) -> ingest.Parsed:
    """The entries as articles; an entry whose key an earlier entry of the same feed has
    is rejected (else the feed's later entry would overwrite the earlier one each fetch)."""
    parsed = ingest.Parsed()
    first_with: dict[str, int] = {}
    for entry in entries:
        result = _article(entry, feed_url, place)
        if isinstance(result, ingest.Rejection):
            parsed.rejections.append(result)
            continue
        index, article = result
        key = article.key or ""
        if key in first_with:
            label = repr(entry.title[:60])
            reason = f"the entry repeats the id of entry {first_with[key]}"
            parsed.rejections.append(ingest.Rejection(index, label, reason))
            continue
        first_with[key] = index
        parsed.articles.append(result)
    return parsed


# --- RSS and Atom ---------------------------------------------------------------------


def _struct_time(value: Any) -> datetime | None:
    if isinstance(value, time.struct_time):
        return datetime(*value[:6], tzinfo=UTC)
    return None


def _feed_entry(index: int, entry: dict[str, Any]) -> _Entry:
    # dict.get: feedparser's own `get` maps `updated` to `published` with a warning.
    date_text = dict.get(entry, "published") or dict.get(entry, "updated") or ""
    published = parse_date(date_text) or _struct_time(
        dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")
    )
    contents = [c for c in entry.get("content") or [] if c.get("value")]
    html_content = next((c for c in contents if "html" in (c.get("type") or "")), None)
    content = (html_content or (contents[0] if contents else {})).get("value")
    image = next(
        (
            e.get("href") or e.get("url")
            for e in [*entry.get("enclosures", []), *entry.get("media_content", [])]
            if str(e.get("type", "")).startswith("image/")
        ),
        None,
    )
    return _Entry(
        index=index,
        entry_id=entry.get("id"),
        title=text_of(entry.get("title") or ""),
        link=entry.get("link"),
        published=published,
        date_text=date_text,
        summary=entry.get("summary"),
        content=content,
        image=image,
    )


def _parse_feed(
    content: bytes, content_type: str | None, url: str, place: str, notes: list[str]
) -> ingest.Parsed:
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    # A stream, never bytes: feedparser opens bytes that name a file as that file.
    document = feedparser.parse(io.BytesIO(content), response_headers=headers, sanitize_html=True)
    problem = document.get("bozo_exception")
    entries = [_feed_entry(n, e) for n, e in enumerate(document.entries, start=1)]
    parsed = _collect(entries, url, place)
    if isinstance(problem, feedparser.CharacterEncodingOverride):
        notes.append(str(problem))
    elif problem is not None:
        where = getattr(problem, "getLineNumber", lambda: None)()
        reason = f"invalid XML ({problem}{f' at line {where}' if where else ''})"
        if not parsed.articles:
            raise IngestInputError(url, reason)
        notes.append(f"{reason}; entries read leniently")
    return parsed


# --- JSON Feed ------------------------------------------------------------------------


def _json_feed_entry(index: int, item: Any) -> _Entry:
    if not isinstance(item, dict):
        item = {}
    # The spec's fields are strings: a title or date of another type counts as missing.
    date_text = _string(item.get("date_published")) or _string(item.get("date_modified")) or ""
    item_id = item.get("id")
    return _Entry(
        index=index,
        entry_id=str(item_id) if isinstance(item_id, (str, int)) else None,
        title=text_of(_string(item.get("title")) or ""),
        link=_string(item.get("url")) or _string(item.get("external_url")),
        published=parse_date(date_text),
        date_text=date_text,
        summary=_string(item.get("summary")),
        content=_string(item.get("content_html"))
        or (html.escape(text) if (text := _string(item.get("content_text"))) else None),
        image=_string(item.get("image")),
    )


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _parse_json_feed(text: str, url: str, place: str) -> ingest.Parsed:
    """JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1)."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise IngestInputError(url, f"invalid JSON Feed ({exc})") from exc
    if not isinstance(document, dict) or not str(document.get("version", "")).startswith(
        "https://jsonfeed.org/version/"
    ):
        raise IngestInputError(url, "not a JSON Feed: no 'version' https://jsonfeed.org/...")
    items = document.get("items")
    if not isinstance(items, list):
        raise IngestInputError(url, "not a JSON Feed: 'items' is not a list")
    entries = [_json_feed_entry(n, item) for n, item in enumerate(items, start=1)]
    return _collect(entries, url, place)

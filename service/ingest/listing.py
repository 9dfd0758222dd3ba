"""The agency's listing page, as text (the demo file) or as HTML, into `Parsed` items.

An item is [caption] title teaser, the teaser opening with a date line
("Bonn, 24. Februar 2024. ..."). Imports `ingest.model`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date
from urllib.parse import urljoin

from service.errors import IngestInputError
from service.ingest.model import Parsed, Rejection, item_label, validate
from service.text import single_line

# A caption or title is a line or two; anything longer is a teaser that lost its date line.
_SHORT_PARAGRAPH = 250


# Read when a listing is first parsed: loading the locales is most of importing ingest.
@functools.cache
def _months() -> dict[str, int]:
    from babel.dates import get_month_names

    return {
        name.lower(): number
        for locale in ("de", "de_AT")
        for number, name in get_month_names("wide", locale=locale).items()
    }


_DATELINE = re.compile(
    r"^(?P<place>[^,\n]{1,100}),\s+(?P<day>\d{1,2})\.\s+(?P<month>[^\W\d_]+)\s+"
    r"(?P<year>\d{4})\.\s*(?P<rest>.*)$",
    re.DOTALL,
)


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
    month = _months().get(month_name.lower())
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
                    item_label(group[0].text),
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
                Rejection(paragraph.line, item_label(paragraph.text), "teaser without a title")
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
            parsed.rejections.append(Rejection(paragraph.line, item_label(title.text), str(exc)))
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
        result = validate(title.line, item_label(title.text), raw)
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

"""JSON and NDJSON input, format names and detection, decoding bytes. Imports `ingest.model`
and `ingest.listing`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from service.errors import IngestInputError
from service.ingest.listing import parse_listing_html, parse_listing_text
from service.ingest.model import Parsed, Rejection, validate

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
        result = validate(index, f"article {index}", raw)
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
        result = validate(number, f"article on line {number}", raw)
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

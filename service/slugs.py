"""Slugs: the URL words of articles, topics and municipalities.

Owns how text becomes a slug: German umlauts as ae/oe/ue/ss (which generic slugifiers get
wrong), Ukrainian Cyrillic in the official romanisation (Cabinet of Ministers resolution 55
of 2010, via `translitua`: Київ → kyiv, Запоріжжя → zaporizhzhia, Єнакієве → yenakiieve),
and how topics whose slugs would collide are told apart. Imports nothing from the package.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Iterable

from translitua import translit

FALLBACK = "artikel"
TOPIC_PREFIX = "thema"
# Replaced one by one: `str.translate` with multi-letter replacements is ten times slower.
_GERMAN = (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"))
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# Only Cyrillic words go through translitua: it also drops apostrophes from Latin text.
_CYRILLIC_WORD = re.compile(r"[\u0400-\u04ff]+(?:['’ʼ][\u0400-\u04ff]+)*")


def _romanize(value: str) -> str:
    return _CYRILLIC_WORD.sub(lambda word: translit(word.group()), value)


def slug_text(value: str, max_length: int = 80) -> str:
    """The slug of `value`; empty when none of it can be spelt in a URL (emoji only)."""
    return _slug_text(value, max_length)  # both arguments given: one cache entry per text


# An import asks for the slug of each title twice (its key, its slug): remembered once.
@functools.lru_cache(maxsize=16_384)
def _slug_text(value: str, max_length: int) -> str:
    if value.isascii():  # nothing to normalise, romanise or spell out
        value = value.lower()
    else:
        value = unicodedata.normalize("NFC", value).lower()
        value = _romanize(value).lower()
        for letter, spelt in _GERMAN:
            value = value.replace(letter, spelt)
        value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    value = _NOT_SLUG.sub("-", value).strip("-")
    if len(value) > max_length:
        cut = value[: max_length + 1]
        value = cut.rsplit("-", 1)[0] if "-" in cut else cut[:max_length]
    return value


def slugify(value: str, max_length: int = 80) -> str:
    """URL slug of `value`, `artikel` when nothing of it can be spelt (callers that need
    distinct slugs add a suffix)."""
    return slug_text(value, max_length) or FALLBACK


def text_hash(value: str, length: int = 8) -> str:
    """A short stable hash of a text, to tell apart what spells the same (or not at all)."""
    normal = unicodedata.normalize("NFC", value).encode("utf-8", "surrogatepass")
    return hashlib.sha256(normal).hexdigest()[:length]


def topic_slugs(topics_by_first_use: Iterable[str]) -> dict[str, str]:
    """A distinct slug for each topic, given in the order they were first used.

    A topic without letters to spell (🇺🇦) gets `thema-<hash>`. When two topics would share
    a slug (`Kyiv` and `Київ`), the one used first keeps it and the later one gets
    `-<hash of its name>`, so a topic's address never depends on how many others collide.
    """
    slugs: dict[str, str] = {}
    taken: set[str] = set()
    for topic in topics_by_first_use:
        base = slug_text(topic) or f"{TOPIC_PREFIX}-{text_hash(topic)}"
        slug, n = base, 1
        while slug in taken:
            slug = f"{base}-{text_hash(topic)}" + (f"-{n}" if n > 1 else "")
            n += 1
        taken.add(slug)
        slugs[topic] = slug
    return slugs

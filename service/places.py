"""Places: which municipality an article is about, by the place names it mentions.

Owns the names a municipality and its partner go by in articles (without "Stadt",
"Landkreis", ...) and how prominently an article mentions them. Owns no data and imports
none of partnerpost's modules (it reads anything shaped like a subscriber or an article).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol


class Named(Protocol):
    """A municipality as far as its place names go (a `Subscriber`, a `store.Municipality`)."""

    @property
    def name(self) -> str: ...
    @property
    def partner(self) -> str | None: ...


class Mentioning(Protocol):
    """The parts of an article that can mention a place."""

    @property
    def title(self) -> str: ...
    @property
    def teaser(self) -> str: ...
    @property
    def body(self) -> str | None: ...


_MUNICIPALITY_PREFIXES = re.compile(
    r"^(?:(?:Landeshauptstadt|Hansestadt|Universitätsstadt|Lutherstadt|Kreisstadt|"
    r"Große Kreisstadt|Stadt|Gemeinde|Markt|Landkreis|Kreis|Amt|Samtgemeinde|"
    r"Verbandsgemeinde)\s+)+",
    re.IGNORECASE,
)


def place_names(subscriber: Named) -> list[str]:
    """The names an article would use for the municipality and its partner."""
    names = [_MUNICIPALITY_PREFIXES.sub("", subscriber.name).strip()]
    if subscriber.partner:
        names.append(_MUNICIPALITY_PREFIXES.sub("", subscriber.partner).strip())
    return [n for n in names if len(n) >= 3]


def mention_score(article: Mentioning, names: Sequence[str]) -> int:
    """How prominently an article mentions these places: 0 not at all; a title counts
    more than the teaser, the teaser more than the body. Image captions do not count: a
    photo taken in Leipzig does not make an article news about Leipzig."""
    score = 0
    for name in names:
        pattern = re.compile(rf"(?<![\w-]){re.escape(name)}", re.IGNORECASE)
        if pattern.search(article.title):
            score += 8
        if pattern.search(article.teaser):
            score += 2
        if pattern.search(article.body or ""):
            score += 1
    return score

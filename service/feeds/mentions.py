"""Mentions: which subscribed municipalities each article mentions, for every municipality in
one pass over the article.

`places.mention_score` answers for one municipality at a time; asking it for 11,000
municipalities about 1,000 articles is 11 million regex searches. Here one Aho-Corasick
automaton (pyahocorasick) holds every place name, case-folded; a pass over an article's
title, teaser and body yields the names that occur where `places` would look (not right
after a letter, digit, "_" or "-"), and `places.mention_score` itself confirms each one, so
the answer is exactly `places`'. Imports `places`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

import ahocorasick

from service import places

_BEFORE_NAME = re.compile(r"[\w-]")


# Characters `re.IGNORECASE` takes as equal although their `lower()` differ (ı and i, ſ and s,
# ...), each mapped to the other's lower case; `tests/test_feed_mentions.py` derives the table
# from `re` itself over all of Unicode (too slow to do at start).
FOLDS = str.maketrans(
    # "\u1fbe" written as an escape: it is a singleton that text normalization turns into ι.
    "µıſͅςϐϑϕϖϰϱϵᲀᲁᲂᲃᲄᲅᲆᲇᲈẛ\u1fbe",
    "μisισβθφπκρεвдосттъѣꙋṡι",
)
# İ lower-cases into two characters (i and a combining dot); re takes it as i.
_DOTTED_I = str.maketrans({"İ": "i"})


def fold(text: str) -> str:
    """Lower case, one character for one, so positions in `text` and its fold agree."""
    return text.translate(_DOTTED_I).lower().translate(FOLDS)


class Matcher:
    """Every municipality's place names in one automaton."""

    def __init__(self, municipalities: Iterable[places.Named], ids: Iterable[int]) -> None:
        self._ids: dict[str, set[int]] = defaultdict(set)  # name → municipality ids
        folded: dict[str, set[str]] = defaultdict(set)  # folded name → names
        for municipality, ident in zip(municipalities, ids, strict=True):
            for name in places.place_names(municipality):
                self._ids[name].add(ident)
                folded[fold(name)].add(name)
        self._automaton: ahocorasick.Automaton | None = None
        if folded:
            self._automaton = ahocorasick.Automaton()
            for key, names in folded.items():
                self._automaton.add_word(key, (len(key), tuple(sorted(names))))
            self._automaton.make_automaton()

    def mentioned(self, article: places.Mentioning) -> set[int]:
        """The ids of the municipalities `article` mentions (`places.mention_score` > 0)."""
        if self._automaton is None:
            return set()
        # A line break is no part of any name and no word character: fields stay apart.
        text = f"{article.title}\n{article.teaser}\n{article.body or ''}"
        folded = fold(text)
        if len(folded) != len(text):  # a character lower-cased into two: positions moved
            folded = "".join(f if len(f := fold(char)) == 1 else char for char in text)
        candidates: set[str] = set()
        for end, (length, names) in self._automaton.iter(folded):
            start = end - length + 1
            if start == 0 or not _BEFORE_NAME.match(text[start - 1]):
                candidates.update(names)
        found: set[int] = set()
        for name in candidates:
            if places.mention_score(article, [name]) > 0:
                found |= self._ids[name]
        return found

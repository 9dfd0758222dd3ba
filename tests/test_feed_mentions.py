"""Mentions: one automaton for every municipality finds exactly the mentions
`places.mention_score` finds one municipality at a time."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service import places, store
from service.feeds import mentions

from .helpers import import_demo

# Names that trip naive matching: one a prefix of another, umlauts, Cyrillic, prefixes
# `places` strips, a hyphenated name, dotted and dotless i.
MUNICIPALITIES = [
    ("Stadt Halle (Saale)", None),
    ("Gemeinde Halle", "Kyjiw"),
    ("Stadt Leipzig", "Kyjiw"),
    ("Stadt Borna", "Irpin"),
    ("Stadt Görlitz", "Київ"),
    ("Landeshauptstadt Düsseldorf", "Tscherniwzi"),
    ("Große Kreisstadt Weißwasser", None),
    ("Stadt Bad Bergzabern", "Ирпінь"),
    ("Markt Au", "Lwiw"),
    ("Stadt Iserlohn", "İzmir"),
    ("Stadt Sankt Augustin", "Saint-Augustin"),
]


@dataclass(frozen=True)
class _Text:
    title: str
    teaser: str
    body: str | None = None


def _expected(article: places.Mentioning) -> set[int]:
    return {
        ident
        for ident, (name, partner) in enumerate(MUNICIPALITIES)
        if places.mention_score(
            article, places.place_names(store.Municipality(ident, "", name, partner))
        )
        > 0
    }


def _matcher() -> mentions.Matcher:
    rows = [store.Municipality(i, "", n, p) for i, (n, p) in enumerate(MUNICIPALITIES)]
    return mentions.Matcher(rows, range(len(rows)))


async def test_the_demo_articles_mention_what_places_says(sessions):
    await import_demo(sessions)
    async with sessions() as session:
        articles = await store.feed_articles(session, 100)
    matcher = _matcher()
    found = [matcher.mentioned(article) for article in articles]
    assert found == [_expected(article) for article in articles]
    assert any(found)  # the demo does mention some of them


def test_tricky_names_match_as_places_matches_them():
    matcher = _matcher()
    for text in [
        "Halle (Saale) und Halle",
        "Hallenbad in Turnhalle",
        "Saale-Halle",
        "Kyjiws Bürgermeister",
        "KYJIW",
        "київ і ірпінь",
        "Partnerstadt Ирпінь",
        "Weisswasser oder WEISSWASSER",
        "Ausflug nach Augsburg",
        "ıserlohn und ISERLOHN",
        "Saint-Augustin, Sankt Augustin",
        "_Leipzig 2Leipzig -Leipzig",
    ]:
        for article in (_Text(text, ""), _Text("", text), _Text("", "", text)):
            assert matcher.mentioned(article) == _expected(article), text


WORDS = [name for pair in MUNICIPALITIES for name in pair if name] + [
    "Halle (",
    "Hallen",
    "-",
    " ",
    "_",
    "\n",
    "ä",
    "I",
    "ı",
    "İ",
    "ſ",
    "x",
    "Ö",
]


@hypothesis_settings(max_examples=400)
@given(parts=st.lists(st.sampled_from(WORDS), max_size=12), case=st.sampled_from([0, 1, 2]))
def test_any_text_of_name_pieces_matches_as_places_matches_it(parts: list[str], case: int):
    text = "".join(parts)
    text = [text, text.upper(), text.lower()][case]
    article = _Text(text[: len(text) // 2], text[len(text) // 2 :], text)
    assert _matcher().mentioned(article) == _expected(article)


def test_the_fold_table_is_what_re_takes_as_equal():
    """`mentions.FOLDS` is written out; derive it from `re` over all of Unicode."""
    table = {}
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        upper = char.upper()
        if len(upper) == 1 and len(char.lower()) == 1 and upper.lower() != char.lower():
            if re.fullmatch(re.escape(char), upper, re.IGNORECASE):
                table[ord(char.lower())] = upper.lower()
    assert table == {k: chr(v) for k, v in mentions.FOLDS.items()}

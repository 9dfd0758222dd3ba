"""Places: the names a municipality goes by in articles, and how prominently one is named."""

from __future__ import annotations

from datetime import UTC, datetime

from service import places, store


def _subscriber(name: str, partner: str | None = None) -> store.Subscriber:
    return store.Subscriber(name=name, partner=partner, frequency="weekly")


def _article(title: str, teaser: str = "", body: str | None = None) -> store.Article:
    return store.Article(
        title=title,
        teaser=teaser,
        body=body,
        image_caption="Foto: Leipzig",
        place="Bonn",
        published_at=datetime(2026, 11, 1, tzinfo=UTC),
    )


def test_place_names_drop_municipality_prefixes_and_keep_the_partner():
    subscriber = _subscriber("Große Kreisstadt Stadt Borna", partner="Stadt Kyjiw")

    assert places.place_names(subscriber) == ["Borna", "Kyjiw"]


def test_place_names_leave_out_names_too_short_to_match_safely():
    assert places.place_names(_subscriber("Gemeinde Au", partner="Lwiw")) == ["Lwiw"]


def test_a_title_counts_more_than_the_teaser_and_the_teaser_more_than_the_body():
    names = ["Leipzig"]

    assert places.mention_score(_article("Leipzig hilft"), names) == 8
    assert places.mention_score(_article("Hilfe", teaser="aus Leipzig"), names) == 2
    assert places.mention_score(_article("Hilfe", body="Leipzig schickt"), names) == 1


def test_an_image_caption_or_a_compound_word_is_no_mention():
    names = ["Leipzig"]

    assert places.mention_score(_article("Hilfe für die Partnerstadt"), names) == 0
    assert places.mention_score(_article("Bad-Leipzig-Fest"), names) == 0

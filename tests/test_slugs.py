"""Slugs: German and Ukrainian names spelt for URLs, and topics that never share one."""

from __future__ import annotations

import pytest

from service.slugs import slug_text, slugify, text_hash, topic_slugs


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        # Examples of the Cabinet of Ministers resolution 55 (2010) and its word-initial rules.
        ("Київ", "kyiv"),
        ("Україна", "ukraina"),
        ("Харків", "kharkiv"),
        ("Запоріжжя", "zaporizhzhia"),
        ("Єнакієве", "yenakiieve"),
        ("Їжакевич", "yizhakevych"),
        ("Йосипівка", "yosypivka"),
        ("Юрій", "yurii"),
        ("Яготин", "yahotyn"),
        ("Знам'янка", "znamianka"),
        ("Згорани", "zghorany"),
        ("Стрий", "stryi"),
        ("Феодосія", "feodosiia"),
        ("Leipzig – Київ: Schulpartnerschaft", "leipzig-kyiv-schulpartnerschaft"),
        # German as before: umlauts spelt out, an apostrophe between Latin letters a dash.
        ("Städtepartnerschaft Görlitz", "staedtepartnerschaft-goerlitz"),
        ("Straßenbahn für Lwiw", "strassenbahn-fuer-lwiw"),
        ("Peter's Brücke", "peter-s-bruecke"),
    ],
)
def test_slugs_romanise_ukrainian_officially_and_spell_german_umlauts(name, slug):
    assert slugify(name) == slug


def test_slug_of_text_without_letters_is_empty_and_slugify_falls_back():
    assert slug_text("🇺🇦 ❤️") == ""
    assert slugify("🇺🇦 ❤️") == "artikel"


def test_ukrainian_topics_and_a_flag_get_three_slugs():
    slugs = topic_slugs(["Україна", "Київ", "🇺🇦"])

    assert slugs == {"Україна": "ukraina", "Київ": "kyiv", "🇺🇦": f"thema-{text_hash('🇺🇦')}"}


def test_the_topic_used_first_keeps_a_shared_slug_and_the_later_one_gets_a_hash():
    slugs = topic_slugs(["Kyiv", "Київ", "KYIV", "🇺🇦", "🇩🇪"])

    assert slugs["Kyiv"] == "kyiv"
    assert slugs["Київ"] == f"kyiv-{text_hash('Київ')}"
    assert slugs["KYIV"] == f"kyiv-{text_hash('KYIV')}"
    assert len(set(slugs.values())) == 5
    # A later topic never moves an earlier one, and a topic's slug does not depend on
    # how many others collide with it.
    assert topic_slugs(["Kyiv", "Київ"])["Київ"] == slugs["Київ"]
    assert topic_slugs(["🇺🇦"]) == {"🇺🇦": slugs["🇺🇦"]}


def test_hash_slugs_are_stable_across_runs():
    # Pinned: a topic's address must not change between releases.
    assert text_hash("🇺🇦") == "f4a81491"

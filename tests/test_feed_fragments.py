"""Feed fragments: feeds assembled from entry fragments are byte for byte what feedgen (the
reference renderers in `feeds.render`) writes, for any text an article may hold."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service import feeds, store
from service.feeds import fragments
from service.text import XML_FORBIDDEN

from .helpers import make_settings

SETTINGS = make_settings(Path("/nonexistent"))
# Text with what escaping must get right: markup, quotes, line breaks, CR, tabs, non-ASCII,
# and control characters the renderers drop.
TEXT = st.text(
    alphabet=st.sampled_from(list(string.printable + "äöüßÄ€–„“Київ🇺🇦\x0b\x08\x1b")),
    max_size=40,
)
MOMENT = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)


@st.composite
def articles(draw: st.DrawFn, ident: int) -> store.FeedArticle:
    return store.FeedArticle(
        id=ident,
        guid=store.article_guid(f"k{ident}"),
        slug=f"artikel-{ident}",
        title=draw(TEXT.filter(lambda t: feeds.xml_safe(t) != "")),
        teaser=draw(TEXT),
        body=draw(st.none() | TEXT),
        published_at=draw(MOMENT),
        updated_at=draw(MOMENT),
        image_caption=draw(st.none() | TEXT),
        image_url=draw(st.none() | st.just("https://bild.example.org/a&b.jpg")),
        source_url=draw(st.none() | st.just("https://quelle.example.org/x?a=1&b=2")),
        source_id=draw(st.none() | st.just(7)),
        topics=tuple(sorted(set(draw(st.lists(TEXT.filter(str.strip), max_size=3))))),
    )


@st.composite
def specs(draw: st.DrawFn) -> feeds.FeedSpec:
    count = draw(st.integers(min_value=0, max_value=4))
    return feeds.FeedSpec(
        stem=draw(st.sampled_from(["artikel", "themen/energie", "kommunen/stadt-borna"])),
        title=draw(TEXT),
        description=draw(TEXT),
        home_url="https://partnerpost.example.org/",
        articles=[draw(articles(i)) for i in range(count)],
    )


@hypothesis_settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs())
def test_assembled_feeds_equal_what_feedgen_writes(spec: feeds.FeedSpec):
    entries = fragments.Entries(SETTINGS).of(spec.articles)

    assembled = fragments.assemble(SETTINGS, spec, entries)

    for suffix, render in feeds.RENDERERS.items():
        assert assembled[f"{spec.stem}{suffix}"] == render(SETTINGS, spec)


def test_the_feed_of_no_articles_equals_what_feedgen_writes():
    spec = feeds.FeedSpec("kommunen/leer", "Leer", "Nichts", "https://partnerpost.example.org/", [])
    assembled = fragments.render_all(SETTINGS, [spec])
    for suffix, render in feeds.RENDERERS.items():
        assert assembled[f"kommunen/leer{suffix}"] == render(SETTINGS, spec)


def test_a_hub_is_named_in_every_format():
    start = datetime(2024, 1, 1, tzinfo=UTC)
    article = store.FeedArticle(
        1, "urn:uuid:x", "a", "Titel", "Teaser", None, start, start + timedelta(1),
        None, None, None, None, (),
    )  # fmt: skip
    spec = feeds.FeedSpec("artikel", "T", "D", "https://partnerpost.example.org/", [article])
    hub = "https://hub.example.org/?a=1&b=2"

    rendered = fragments.render_all(SETTINGS, [spec], hub)

    for suffix in (".xml", ".atom"):
        parsed = feedparser.parse(rendered[f"artikel{suffix}"])
        assert not parsed.bozo
        assert [link.href for link in parsed.feed.links if link.rel == "hub"] == [hub]
    document = json.loads(rendered["artikel.json"])
    assert document["hubs"] == [{"type": "WebSub", "url": hub}]
    assert [item["title"] for item in document["items"]] == ["Titel"]
    # The JSON Feed is written by hand: it must be the bytes `json.dumps` would write.
    assert (
        rendered["artikel.json"]
        == (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()
    )


def test_every_character_xml_forbids_is_dropped_and_every_other_kept():
    # `xml_safe` looks at most text only through `str.isprintable`: that must never let a
    # forbidden character through, wherever it stands.
    forbidden = [chr(c) for c in range(0x110000) if XML_FORBIDDEN.match(chr(c))]
    assert len(forbidden) == 2080  # C0 controls but tab and line breaks, DEL, surrogates, 2
    for char in forbidden:
        assert feeds.xml_safe(f"Kyjiw{char}–Leipzig") == "Kyjiw–Leipzig"
    kept = "Tab\tZeile\r\nNBSP\u00a0ZWJ\u200d🇺🇦 Київ"
    assert feeds.xml_safe(kept) == kept


def test_every_character_is_escaped_in_json_items_as_json_dumps_escapes_it():
    # The entries' JSON strings come from orjson; the feed must stay `json.dumps`' bytes.
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), 4096):
        text = "".join(chars[start : start + 4096])
        assert fragments._json(text) == json.dumps(text, ensure_ascii=False).encode()

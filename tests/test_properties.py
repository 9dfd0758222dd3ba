"""Properties: whatever text editors and municipalities type, feeds, mail and pages hold.

Hypothesis writes the text: any Unicode (control characters, right-to-left marks, emoji,
combining marks, and lone surrogates where the input format can carry them: JSON escapes),
laced with markup and other usual suspects. Each example runs in memory or on one SQLite
store, through the real parsers, renderers and app (in-process, no sockets). The number of
examples comes from the Hypothesis profile in conftest (2,000 by default).
"""

from __future__ import annotations

import asyncio
import email
import email.header
import email.policy
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import feedparser
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from lxml import html as lxml_html
from pydantic import ValidationError
from sqlalchemy import delete

from service import digest, feeds, ingest, mailer, store, subscribers
from service.config import Settings

from .helpers import AUTH, BASE_URL, MAIL_FROM, make_settings

ATOM = "{http://www.w3.org/2005/Atom}"
NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
# What breaks markup, headers, bidi rendering or naive code, mixed into the random text.
SUSPECTS = st.sampled_from(
    [
        "<",
        ">",
        "&",
        '"',
        "'",
        "<script>alert(1)</script>",
        "</title><b>",
        "]]>",
        "&amp;",
        "{{ 7*7 }}",
        "=?utf-8?q?=41?=",
        "\r\n",
        "\t",
        "\x00",
        "\x1b[31m",
        "\x85",
        "\u2028",
        "\ufeff",
        "\u202e",
        "\u200f",
        "עברית",
        "العربية",
        "Київ",
        "🇺🇦",
        "👩‍👩‍👧",
        "e\u0301",
        "\U0001fffe",
        "x" * 120,
    ]
)


def _text(*, surrogates: bool) -> st.SearchStrategy[str]:
    # Kept small: generating structured text is most of what a property costs.
    alphabet = st.characters(exclude_categories=() if surrogates else ("Cs",))
    head = st.one_of(SUSPECTS, st.text(alphabet, max_size=12))
    return st.tuples(head, st.text(alphabet, max_size=12)).map("".join)


def _articles(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "title": text,
            "teaser": text,
            "place": text,
            "published": st.dates(date(1990, 1, 1), date(2100, 12, 31)).map(str),
        },
        optional={
            "image_caption": text,
            "topics": st.lists(text, max_size=2),
            "body": text,
            "image_url": st.just("https://example.org/bild.jpg?a=1&b=<2>"),
        },
    )


# A plain article next to the generated one, so every feed and digest has one to show.
EDITORIAL = {
    "title": "Leipzig – Kyjiw",
    "teaser": "Text.",
    "place": "Leipzig",
    "published": "2024-02-24",
}
JSON_TEXT = _text(surrogates=True)
FILE_TEXT = _text(surrogates=False)
_ids = itertools.count(1)


def _stored(data: store.ArticleData) -> store.Article:
    """The article as the store would hold it, built in memory."""
    article = store.Article(
        id=next(_ids),
        key=data.key,
        guid=store.article_guid(data.key),
        slug=store.slugify(data.title),
        notify=True,
        created_at=NOW,
        updated_at=NOW,
        title=data.title,
        teaser=data.teaser,
        body=data.body,
        place=data.place,
        published_at=data.published_at,
        image_caption=data.image_caption,
        image_url=data.image_url,
        source_url=data.source_url,
    )
    article.topic_rows = [store.ArticleTopic(topic=t) for t in sorted(set(data.topics))]
    return article


def _imported(items: list[dict[str, Any]], fmt: ingest.Format) -> list[store.Article]:
    """Parse like `partnerpost ingest` does; every item is imported or rejected, none lost."""
    if fmt == "json":
        text = json.dumps(items)
    else:
        text = "\n".join(json.dumps(item) for item in items)
    parsed = ingest.parse(text, fmt)
    assert len(parsed.articles) + len(parsed.rejections) == len(items)
    for _, article in parsed.articles:
        for value in (article.title, article.teaser, article.place, *article.topics):
            assert value == " ".join(value.split())  # one line, no edge whitespace
            assert not any(ord(c) < 32 or ord(c) == 127 for c in value)
    return [_stored(article.to_data()) for _, article in parsed.articles]


@pytest.fixture(scope="module")
def plain_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Module-scoped (Hypothesis runs the examples of a test with one set of fixtures)."""
    folder = tmp_path_factory.mktemp("properties")
    return make_settings(
        folder,
        outbox_dir=folder / "outbox",
        secret_key="property-secret-key-0123456789abcdef",
        mail_from=MAIL_FROM,
    )


# --- feeds ----------------------------------------------------------------------------


@given(
    item=_articles(JSON_TEXT),
    fmt=st.sampled_from(["json", "ndjson"]),
    heading=FILE_TEXT,
    read_as=st.sampled_from([".xml", ".atom"]),
)
def test_any_text_imports_cleanly_and_gives_feeds_every_reader_parses(
    plain_settings, item, fmt, heading, read_as
):
    articles = _imported([item, EDITORIAL], fmt)
    spec = feeds.FeedSpec("artikel", heading, heading, BASE_URL, articles)
    titles = [feeds.xml_safe(a.title) for a in articles]

    for suffix, render in feeds.RENDERERS.items():
        data = render(plain_settings, spec)
        if suffix == ".json":
            document = json.loads(data)
            assert [item["title"] for item in document["items"]] == titles
            continue
        root = etree.fromstring(data)  # well-formed XML 1.0, or it raises
        if suffix == ".atom":
            found = [e.findtext(f"{ATOM}title") for e in root.iter(f"{ATOM}entry")]
        else:
            found = [item.findtext("title") for item in root.iter("item")]
        assert found == titles
        if suffix != read_as:  # feedparser is slow: each example has it read one format
            continue
        parsed = feedparser.parse(data)
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert len(parsed.entries) == len(articles)
        assert [e.id for e in parsed.entries] == [a.guid for a in articles]


# --- mail -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer(plain_settings: Settings) -> digest.DigestRenderer:
    return digest.DigestRenderer(plain_settings)


@given(name=FILE_TEXT, partner=st.none() | FILE_TEXT, item=_articles(FILE_TEXT))
def test_any_digest_is_a_valid_message_with_ascii_headers(
    plain_settings, renderer, name, partner, item
):
    try:
        data = subscribers.SubscriberIn(name=name, partner=partner, email="rathaus@example.org")
    except ValidationError:
        return  # refused at subscription: never reaches a mail
    articles = _imported([item, EDITORIAL], "ndjson")
    subscriber = store.Subscriber(
        id=1, name=data.name, slug=store.slugify(data.name), partner=data.partner, topics=[]
    )
    address = store.Address(id=next(_ids), email=data.email, subscriber=subscriber)
    period = store.Period(store.Frequency.WEEKLY, NOW - timedelta(days=7), NOW)

    rendered = renderer.render(period, address, articles)
    raw = renderer.envelope(period, 1, address, rendered, NOW).data

    assert raw.isascii()  # headers encoded, bodies quoted-printable
    lines = raw.split(b"\r\n")
    assert all(len(line) <= 998 and b"\r" not in line and b"\n" not in line for line in lines)
    header_block = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    for line in header_block.split("\r\n"):  # no input can open a header of its own
        assert line[:1] in {" ", "\t"} or line.split(":", 1)[0] in KNOWN_HEADERS, line
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert not any(part.defects for part in message.walk())
    sent_to = email.message_from_bytes(raw)["To"]  # the header as sent, undecoded
    if "=?" in sent_to:
        # RFC 2047 6.2: white space between two encoded-words is dropped; Python's address
        # parser keeps it (a name split into words of at most 75 characters gains a space),
        # so the name is read back with the decoder that follows the RFC.
        decoded = str(email.header.make_header(email.header.decode_header(sent_to)))
        assert decoded == f"{mailer.header_safe(data.name)} <{data.email}>"
    else:
        assert message["To"].addresses[0].display_name == mailer.header_safe(data.name)
    assert message["To"].addresses[0].addr_spec == data.email
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None and html_part is not None
    text = text_part.get_content()
    page = lxml_html.document_fromstring(html_part.get_content())
    page_text = page.text_content()
    for article in articles:
        assert article.title in text
        assert " ".join(article.title.split()) in " ".join(page_text.split())
    assert not page.xpath("//script")


KNOWN_HEADERS = {
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Archive",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
}


# --- pages ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_client(plain_settings: Settings) -> Iterator[tuple[asyncio.Runner, httpx.AsyncClient]]:
    """The real app with its lifespan, spoken to in-process (ASGI), on one event loop."""
    from service.web import create_app

    app = create_app(plain_settings)
    runner = asyncio.Runner()
    lifespan = app.router.lifespan_context(app)
    runner.run(lifespan.__aenter__())
    app.state.scheduler.pause()  # feed builds would redo thousands of topic feeds
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=BASE_URL,
        headers=AUTH,
    )
    try:
        yield runner, client
    finally:
        runner.run(client.aclose())
        runner.run(lifespan.__aexit__(None, None, None))
        runner.close()


JSON_TYPE = {"Content-Type": "application/json"}


def _same_text(element: Any, expected: str) -> None:
    assert " ".join(element.text_content().split()) == " ".join(expected.split())


@given(item=_articles(JSON_TEXT))
def test_pages_show_any_text_as_text_never_as_markup(app_client, item):
    runner, client = app_client

    async def pages() -> AsyncIterator[httpx.Response]:
        body = json.dumps(item).encode()  # \u escapes: JSON can carry a lone surrogate
        created = await client.post("/api/articles", content=body, headers=JSON_TYPE)
        assert created.status_code in {200, 201, 422}, created.text
        if created.status_code == 422:
            return
        yield created
        slug = created.json()["slug"]
        yield await client.get(f"/artikel/{slug}")

    async def fetch() -> list[httpx.Response]:
        return [response async for response in pages()]

    async def clear() -> None:
        async with app_sessions() as session, session.begin():
            await session.execute(delete(store.Article))

    app_sessions = client._transport.app.state.sessions  # type: ignore[attr-defined]
    try:
        responses = runner.run(fetch())
    finally:
        runner.run(clear())
    if not responses:
        return
    article = responses[0].json()
    page = responses[1]
    assert page.status_code == 200
    document = lxml_html.document_fromstring(page.content)
    assert not document.xpath("//script")
    if "body" not in item:  # the body is HTML (sanitised), the only markup an editor sends
        assert not document.xpath("//main//b")
    (heading,) = document.xpath("//main//h1")
    _same_text(heading, article["title"])
    topic_links = document.xpath("//main//p[@class='meta']/a")
    assert [link.text_content() for link in topic_links] == article["topics"]
    for link in topic_links:
        assert link.get("href").startswith(f"{BASE_URL}/themen/")
    feed_titles = [link.get("title") for link in document.xpath("//head/link[@rel='alternate']")]
    for topic in article["topics"]:
        assert any(title.endswith(f"Thema: {topic}") for title in feed_titles)
    for caption in document.xpath("//*[@class='caption']"):
        assert article["image_caption"] in caption.text_content()

"""Digest rendering: the articles an address gets in their order (at most
`digest_max_articles`, the rest counted and linked to the period's archive page), the HTML and
text mail from `templates/email/digest.{html,txt}.j2`, its envelope, and the preview of it.

Owns no data. Imports `config`, `clock`, `store`, `consent` (legal links), `feeds` (links),
`places`, `mailer`, `subscribers` (tokens), `templating` and `digest.periods`.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import quote

import css_inline
from babel.numbers import format_decimal
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import consent, feeds, mailer, places, store, templating
from service.config import Settings
from service.digest.periods import archive_path, latest_period, period_label
from service.subscribers import Tokens

LIST_NAME = "Kommunalpartnerschaften Ukraine"
# Stand-ins for what differs per address, replaced after the shared part is rendered.
_NAME, _FEED = "@@PP-NAME@@", "@@PP-FEED@@"
_UNSUBSCRIBE, _PREFERENCES = "@@PP-UNSUBSCRIBE@@", "@@PP-PREFERENCES@@"
_STAND_INS = (_NAME, _FEED, _UNSUBSCRIBE, _PREFERENCES)
# The list headers that differ between the addresses of one digest (the others are folded
# once per digest).
_PER_ADDRESS_HEADERS = frozenset({"List-Unsubscribe"})
_UNSUBSCRIBE_SUBJECT = quote("Abmelden ")


@dataclass(frozen=True)
class RenderedDigest:
    """One address's digest: subject, bodies (shared, encoded once, with the address's
    values for their stand-ins), the articles it lists, how many more it only counts (the
    archive page has them), its unsubscribe token."""

    subject: str
    body: mailer.PreparedBody
    text_values: dict[str, str]
    html_values: dict[str, str]
    article_ids: tuple[int, ...]
    unsubscribe_token: str
    archived: int = 0

    @property
    def text(self) -> str:
        """The plain-text body as the address gets it."""
        return _filled(self.body.text.text, self.text_values)

    @property
    def html(self) -> str:
        """The HTML body as the address gets it."""
        assert self.body.html is not None
        return _filled(self.body.html.text, self.html_values)

    def with_links_to(self, url: str) -> RenderedDigest:
        """The same digest with its unsubscribe and preferences links pointing to `url`:
        for previews and test sends, whose reader must not act for the municipality."""
        text_values = {**self.text_values, _UNSUBSCRIBE: url, _PREFERENCES: url}
        html_url = html_lib.escape(url, quote=True)
        html_values = {**self.html_values, _UNSUBSCRIBE: html_url, _PREFERENCES: html_url}
        return replace(self, text_values=text_values, html_values=html_values)

    @property
    def carried(self) -> int:
        """The articles the digest carries, listed or counted: all of its ledger row's
        window (the next row starts after it, so none of them comes again)."""
        return len(self.article_ids) + self.archived


def _filled(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def order_for(
    subscriber: store.Subscriber, articles: Sequence[store.Article]
) -> tuple[list[store.Article], list[store.Article]]:
    """Split into (articles about the municipality or its partner, the rest): the first
    by how prominently they mention them, both newest first otherwise."""
    names = places.place_names(subscriber)
    scored = [(places.mention_score(a, names), a) for a in articles]
    own = [a for score, a in sorted(scored, key=lambda p: -p[0]) if score > 0]
    rest = [a for score, a in scored if score == 0]
    return own, rest


def capped(
    own: list[store.Article], rest: list[store.Article], limit: int
) -> tuple[list[store.Article], list[store.Article], int]:
    """The first `limit` articles, own first, split as given, and how many are left out."""
    listed_own = own[:limit]
    listed_rest = rest[: limit - len(listed_own)]
    return listed_own, listed_rest, len(own) + len(rest) - len(listed_own) - len(listed_rest)


def more_label(count: int) -> str:
    """`7.275 weitere Beiträge`: the articles a digest counts but does not list."""
    number = format_decimal(count, locale=templating.LOCALE)
    return f"{number} {'weiterer Beitrag' if count == 1 else 'weitere Beiträge'}"


def archive_url(settings: Settings, period: store.Period) -> str:
    """The public page of the period's general edition."""
    return settings.link(archive_path(period))


@dataclass(frozen=True)
class _Selection:
    """The articles a municipality's digest lists (its own first, then the rest), how many
    more it only counts, their ids, and what of it makes a rendering differ."""

    own: list[store.Article]
    rest: list[store.Article]
    more: int
    listed: tuple[int, ...]
    shared_key: tuple[object, ...]

    @classmethod
    def of(
        cls,
        subscriber: store.Subscriber,
        own: list[store.Article],
        rest: list[store.Article],
        more: int,
    ) -> _Selection:
        own_ids, rest_ids = tuple(a.id for a in own), tuple(a.id for a in rest)
        # Without articles of its own a municipality's digest differs from others only in
        # the stand-ins, so all of them share one rendering.
        shared_key: tuple[object, ...] = (rest_ids, more)
        if own:
            shared_key += (subscriber.name, subscriber.partner, own_ids)
        return cls(own, rest, more, own_ids + rest_ids, shared_key)


class DigestRenderer:
    """Renders digests; what addresses share (articles, layout, inlined CSS) is rendered
    once per distinct article selection and reused, only names and links differ."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._env = templating.environment()
        self._tokens = Tokens(settings)
        self._shared: dict[tuple[object, ...], tuple[str, mailer.PreparedBody]] = {}
        self._selections: dict[tuple[object, ...], _Selection] = {}
        # The article list the last digest was rendered from and its ids: the rows of one
        # window share one list, so its ids are read once, not per address.
        self._last_articles: tuple[Sequence[store.Article], tuple[int, ...]] = ((), ())
        self._inliner = css_inline.CSSInliner(keep_style_tags=False)
        self._municipalities: dict[tuple[str, str], tuple[dict[str, str], dict[str, str]]] = {}

    def _shared_parts(
        self, period: store.Period, subscriber: store.Subscriber, selection: _Selection
    ) -> tuple[str, mailer.PreparedBody]:
        """Subject, and text and HTML with stand-ins for the per-address values, encoded
        once; cached."""
        key = (period.key, *selection.shared_key)
        cached = self._shared.get(key)
        if cached is not None:
            return cached
        own, rest, more = selection.own, selection.rest, selection.more
        settings = self._settings
        label = period_label(period)
        count = len(own) + len(rest) + more
        first = (own or rest)[0]
        context = {
            "list_name": LIST_NAME,
            "label": label,
            "preheader": f"{count} {'neuer Beitrag' if count == 1 else 'neue Beiträge'}: "
            f"{first.title}",
            "subscriber_name": _NAME,
            "own_heading": self._own_heading(subscriber),
            "own": own,
            "rest": rest,
            "more": more_label(more) if more else "",
            "archive_url": archive_url(settings, period),
            "article_url": lambda a: feeds.article_url(settings, a),
            "feeds": {
                "RSS": feeds.feed_url(settings, feeds.MAIN_FEED, ".xml"),
                "Atom": feeds.feed_url(settings, feeds.MAIN_FEED, ".atom"),
                "JSON Feed": feeds.feed_url(settings, feeds.MAIN_FEED, ".json"),
            },
            "municipality_feed": _FEED,
            "unsubscribe_url": _UNSUBSCRIBE,
            "preferences_url": _PREFERENCES,
            "imprint": settings.imprint,
            "site_url": settings.link(""),
            "privacy_url": consent.legal_links(settings).privacy_url,
            "imprint_url": consent.legal_links(settings).imprint_url,
        }
        html = self._inliner.inline(self._env.get_template("email/digest.html.j2").render(context))
        text = self._env.get_template("email/digest.txt.j2").render(context)
        parts = (f"{LIST_NAME} – {label}", mailer.PreparedBody(text, html, _STAND_INS))
        if len(self._shared) >= 1024:  # bound memory over runs with many own selections
            self._shared.clear()
        self._shared[key] = parts
        return parts

    def _selection(
        self, subscriber: store.Subscriber, articles: Sequence[store.Article]
    ) -> _Selection:
        """`capped(order_for(...))`, once per municipality and article list: the addresses
        of one municipality share it."""
        if articles is not self._last_articles[0]:
            self._last_articles = (articles, tuple(a.id for a in articles))
        key = (subscriber.id, subscriber.name, subscriber.partner, self._last_articles[1])
        selection = self._selections.get(key)
        if selection is None:
            if len(self._selections) >= 1024:  # bound memory over many municipalities
                self._selections.clear()
            selection = _Selection.of(
                subscriber,
                *capped(*order_for(subscriber, articles), self._settings.digest_max_articles),
            )
            self._selections[key] = selection
        return selection

    @staticmethod
    def _own_heading(subscriber: store.Subscriber) -> str:
        """The heading over the articles about the municipality or its partnership."""
        if subscriber.partner:
            return f"Aus Ihrer Partnerschaft: {subscriber.name} – {subscriber.partner}"
        return f"Aus {subscriber.name}"

    def render(
        self,
        period: store.Period,
        address: store.Address,
        articles: Sequence[store.Article],
    ) -> RenderedDigest:
        """The digest of `articles` for one address, its names and links filled in."""
        subscriber = address.subscriber
        selection = self._selection(subscriber, articles)
        subject, body = self._shared_parts(period, subscriber, selection)
        tokens = self._tokens.of_address(address)
        links = {
            _UNSUBSCRIBE: self._tokens.unsubscribe_link(tokens.unsubscribe),
            _PREFERENCES: self._tokens.preferences_link(tokens.preferences),
        }
        text, html = self._municipality_values(subscriber)
        escaped = {key: html_lib.escape(value, quote=True) for key, value in links.items()}
        return RenderedDigest(
            subject,
            body,
            text | links,
            html | escaped,
            selection.listed,
            tokens.unsubscribe,
            archived=selection.more,
        )

    def _municipality_values(
        self, subscriber: store.Subscriber
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The name and feed of a municipality for the text part and (escaped) for the HTML
        part, once per municipality: its addresses share them."""
        key = (subscriber.name, subscriber.slug)
        values = self._municipalities.get(key)
        if values is None:
            text = {
                _NAME: mailer.header_safe(subscriber.name),
                _FEED: feeds.feed_url(
                    self._settings, f"{feeds.MUNICIPALITIES_DIR}/{subscriber.slug}", ".atom"
                ),
            }
            html = {name: html_lib.escape(value, quote=True) for name, value in text.items()}
            if len(self._municipalities) >= 1024:  # bound memory over many municipalities
                self._municipalities.clear()
            values = self._municipalities[key] = (text, html)
        return values

    def envelope(
        self,
        period: store.Period,
        delivery_id: int,
        address: store.Address,
        digest: RenderedDigest,
        now: datetime,
    ) -> mailer.Envelope:
        """The message of `digest` with its list headers, ready for the transport."""
        settings = self._settings
        message_id = mailer.message_id(
            settings, f"digest.{delivery_id}.{period.end.strftime('%Y%m%d%H%M')}"
        )
        token = digest.unsubscribe_token
        sender = mailer.envelope_sender(settings)  # for the mailto: unsubscribe
        headers = {
            "List-Id": f"{LIST_NAME} <digest.{mailer.mail_domain(settings)}>",
            "List-Unsubscribe": (
                f"<{digest.text_values[_UNSUBSCRIBE]}>, "
                # The token's characters are all safe in a URL: quoted alone, it takes
                # quote's shortcut (the same text as quoting the whole subject).
                f"<mailto:{sender}?subject={_UNSUBSCRIBE_SUBJECT}{quote(token)}>"
            ),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Archive": f"<{archive_url(settings, period)}>",
        }
        data = mailer.message_bytes(
            settings,
            digest.body,
            text_values=digest.text_values,
            html_values=digest.html_values,
            to_name=address.subscriber.name,
            to_address=address.email,
            subject=digest.subject,
            message_id=message_id,
            date=now,
            extra_headers=headers,
            varying=_PER_ADDRESS_HEADERS,
        )
        return mailer.envelope_of(settings, data, address.email, message_id)


async def preview(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], email: str, at: datetime
) -> tuple[RenderedDigest, mailer.Envelope] | None:
    """The digest the address would get for the period ended at `at`; None when it
    would get none (nothing new). Sends and records nothing (it only numbers articles
    committed since the last numbering, as the next run would)."""
    async with sessions() as session, session.begin():
        await store.publish_committed(session)
    async with sessions() as session:
        address = await store.address_by_email(session, email)
        if address is None:
            raise LookupError(f"no subscribed address {email!r}")
        subscriber = address.subscriber
        period = latest_period(settings, store.Frequency(subscriber.frequency), at)
        after, upto = await store.next_window(session, address, period, store.utcnow())
        articles = await store.digest_articles(session, after, upto, subscriber.topics or ())
        if not articles:
            return None
        renderer = DigestRenderer(settings)
        rendered = renderer.render(period, address, articles)
        return rendered, renderer.envelope(period, 0, address, rendered, at)

"""The public archive: every sent digest period as a web page, the list of them, and an
Atom feed of that list.

Owns the routes under `/archiv`, all German and none in the OpenAPI document. A period's
page is its general edition: the articles its sent rows carried (`store.Edition`), without
anything personal (no name, no unsubscribe or preferences link); a period nobody was sent
anything for has no page. Imports `config`, `clock`, `store`, `feeds`, `digest` and the web
package's `dependencies`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from babel.numbers import format_decimal
from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse
from feedgen.feed import FeedGenerator
from sqlalchemy.ext.asyncio import AsyncSession

from service import digest, feeds, store, templating
from service.clock import BERLIN
from service.config import Settings
from service.web.dependencies import AppSettings, PageView, Session

router = APIRouter(include_in_schema=False)

EDITIONS_PER_PAGE = 20
ARTICLES_PER_PAGE = 50
FEED_PATH = "archiv/feed.atom"
_FREQUENCIES = {slug: frequency for frequency, slug in digest.ARCHIVE_SLUGS.items()}
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Pager:
    """Where a paginated page stands: page `page` of `pages`, links by `?seite=`."""

    page: int
    pages: int
    base_url: str

    @classmethod
    def of(cls, page: int, total: int, per_page: int, base_url: str) -> Pager:
        return cls(page, max(1, -(-total // per_page)), base_url)

    def url(self, page: int) -> str:
        return self.base_url if page == 1 else f"{self.base_url}?seite={page}"


def _page_number(seite: str) -> int | None:
    """The page a `?seite=` asks for; None for anything but a plain positive number."""
    if not (seite.isascii() and seite.isdigit()) or len(seite) > 6 or int(seite) < 1:
        return None
    return int(seite)


def articles_label(count: int) -> str:
    """`1 Beitrag`, `7.275 Beiträge`."""
    number = format_decimal(count, locale=templating.LOCALE)
    return f"{number} {'Beitrag' if count == 1 else 'Beiträge'}"


def edition_url(settings: Settings, edition: store.Edition) -> str:
    return settings.link(digest.archive_path(edition.period))


def _label(edition: store.Edition) -> str:
    return digest.period_label(edition.period)


async def _not_found(view: PageView) -> HTMLResponse:
    return await view.page("not_found", code=404, message="Diese Ausgabe gibt es im Archiv nicht.")


@router.get("/archiv", response_class=HTMLResponse)
async def archive_index(
    db_session: Session, view: PageView, settings: AppSettings, seite: str = "1"
) -> HTMLResponse:
    page = _page_number(seite)
    if page is None:
        return await _not_found(view)
    offset = (page - 1) * EDITIONS_PER_PAGE
    found, total = await store.editions(db_session, offset, EDITIONS_PER_PAGE)
    if page > 1 and not found:
        return await _not_found(view)
    return await view.page(
        "archive",
        editions=found,
        pager=Pager.of(page, total, EDITIONS_PER_PAGE, settings.link("archiv")),
        edition_url=lambda edition: edition_url(settings, edition),
        label=_label,
        articles_label=articles_label,
        archive_feed_url=settings.link(FEED_PATH),
    )


async def _edition(session: AsyncSession, slug: str, day: str) -> store.Edition | None:
    """The edition of the `/archiv/{slug}/{day}` page: the period of that frequency whose
    first day (in Berlin) is `day`."""
    frequency = _FREQUENCIES.get(slug)
    try:
        first = date.fromisoformat(day)
    except ValueError:
        return None
    if frequency is None or first.isoformat() != day:  # one spelling per page
        return None
    since = datetime.combine(first, time(), BERLIN).astimezone(UTC)
    until = datetime.combine(first + timedelta(days=1), time(), BERLIN).astimezone(UTC)
    return await store.edition_starting(session, frequency, since, until)


@router.get("/archiv/{slug}/{day}", response_class=HTMLResponse)
async def edition_page(
    slug: str,
    day: str,
    db_session: Session,
    view: PageView,
    settings: AppSettings,
    seite: str = "1",
) -> HTMLResponse:
    page = _page_number(seite)
    edition = await _edition(db_session, slug, day)
    if page is None or edition is None:
        return await _not_found(view)
    articles = await store.digest_articles(
        db_session,
        edition.after,
        edition.upto,
        offset=(page - 1) * ARTICLES_PER_PAGE,
        limit=ARTICLES_PER_PAGE,
    )
    if not articles:
        return await _not_found(view)
    label = _label(edition)
    return await view.page(
        "archive_period",
        heading=label,
        articles=articles,
        count=articles_label(edition.articles),
        sent_at=edition.sent_at,
        pager=Pager.of(page, edition.articles, ARTICLES_PER_PAGE, edition_url(settings, edition)),
        archive_url=settings.link("archiv"),
        archive_feed_url=settings.link(FEED_PATH),
    )


def archive_feed(settings: Settings, title: str, found: Sequence[store.Edition]) -> bytes:
    """Atom 1.0: one entry per period page, newest first."""
    generator = FeedGenerator()
    generator.id(settings.link(FEED_PATH))
    generator.title(f"{feeds.xml_safe(title) or feeds.DEFAULT_TITLE} – Archiv des Newsletters")
    generator.subtitle("Jede versandte Ausgabe des Newsletters für Kommunen als Webseite")
    generator.link(href=settings.link(FEED_PATH), rel="self")
    generator.link(href=settings.link("archiv"), rel="alternate", type="text/html")
    generator.language("de")
    generator.generator("partnerpost")
    generator.author({"name": feeds.xml_safe(settings.feed_author)})
    sent = [edition.sent_at or edition.period.end for edition in found]
    generator.updated(max(sent, default=_EPOCH).astimezone(BERLIN))
    # feedgen prepends entries: the oldest goes in first.
    for edition, sent_at in reversed(list(zip(found, sent, strict=True))):
        url = edition_url(settings, edition)
        entry = generator.add_entry()
        entry.id(url)
        entry.title(_label(edition))
        entry.link(href=url, rel="alternate", type="text/html")
        entry.published(edition.period.end.astimezone(BERLIN))
        entry.updated(sent_at.astimezone(BERLIN))
        entry.summary(articles_label(edition.articles))
    atom: bytes = generator.atom_str(pretty=True)
    return atom


@router.get("/archiv/feed.atom")
async def archive_atom(db_session: Session, settings: AppSettings) -> Response:
    found, _ = await store.editions(db_session, 0, settings.feed_size)
    title = await feeds.site_title(settings, db_session)
    return Response(archive_feed(settings, title, found), media_type=feeds.FORMATS[".atom"])

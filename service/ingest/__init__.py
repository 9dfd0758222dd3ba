"""Ingest: turn a listing page (text or HTML), JSON or NDJSON into stored articles.

Owns the input formats (`listing`, `formats`), the validation of one article (`model`:
`ArticleIn`, also the admin API's request body) and the stable key. Each item is validated
on its own: a bad one is reported with its line and skipped, the good ones are saved, and
nothing stored is deleted. A later import whose key is new but which matches a stored
article as `store.save_articles` describes updates that article (a typo fix). Imports
`store`, `errors`, `slugs`, `clock` and `text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import store
from service.ingest.formats import (
    FORMATS as FORMATS,
)
from service.ingest.formats import (
    Format as Format,
)
from service.ingest.formats import (
    check_format as check_format,
)
from service.ingest.formats import (
    decode as decode,
)
from service.ingest.formats import (
    detect_format as detect_format,
)
from service.ingest.formats import (
    parse as parse,
)
from service.ingest.formats import (
    parse_json as parse_json,
)
from service.ingest.formats import (
    parse_ndjson as parse_ndjson,
)
from service.ingest.listing import (
    parse_listing_html as parse_listing_html,
)
from service.ingest.listing import (
    parse_listing_text as parse_listing_text,
)
from service.ingest.model import (
    MAX_TITLE,
    Duplicate,
)
from service.ingest.model import (
    ArticleEdit as ArticleEdit,
)
from service.ingest.model import (
    ArticleIn as ArticleIn,
)
from service.ingest.model import (
    Parsed as Parsed,
)
from service.ingest.model import (
    Rejection as Rejection,
)
from service.text import CONTROL_CHARS, single_line


@dataclass
class IngestReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    heading: str | None = None
    duplicates: list[Duplicate] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


# --- saving ---------------------------------------------------------------------------


def _last_of_each_key(
    parsed: Parsed, notify: bool
) -> tuple[list[store.ArticleData], list[Duplicate]]:
    """One article per key, the last one given (where it stands), and what it replaced."""
    by_key: dict[str, tuple[int, store.ArticleData]] = {}
    duplicates: list[Duplicate] = []
    for line, article in parsed.articles:
        data = article.to_data(notify)
        earlier = by_key.pop(data.key, None)
        if earlier is not None:
            duplicates.append(Duplicate(line, earlier[0], data.key))
        by_key[data.key] = (line, data)
    return [data for _, data in by_key.values()], duplicates


async def save(
    sessions: async_sessionmaker[AsyncSession],
    parsed: Parsed,
    now: datetime | None = None,
    *,
    notify: bool = True,
) -> IngestReport:
    """Save the parsed articles in one transaction, in bulk (`store.save_articles`); a page
    heading is kept as a site fact.

    `now` is the import time recorded on the articles (the current time when None).
    With `notify=False` new articles are a backfill that no digest carries."""
    articles, duplicates = _last_of_each_key(parsed, notify)
    report = IngestReport(
        rejections=list(parsed.rejections), heading=parsed.heading, duplicates=duplicates
    )
    async with sessions() as session, session.begin():
        for outcome, _ in await store.save_articles(session, articles, now):
            if outcome is store.SaveOutcome.CREATED:
                report.created += 1
            elif outcome is store.SaveOutcome.UPDATED:
                report.updated += 1
            else:
                report.unchanged += 1
        # A page none of whose items could be read may not be the listing at all; a heading
        # is unchecked page text, kept to one line that feeds and mail headers can carry.
        heading = single_line(CONTROL_CHARS.sub(" ", parsed.heading or ""))[:MAX_TITLE]
        if heading and articles:
            await store.set_fact(session, store.LISTING_HEADING, heading)
    return report

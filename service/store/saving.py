"""Saving articles: a new one, or an edit of a stored one, and a whole input at once.

Owns no table (`articles` owns them): the rule that tells an edit from a new article
(`_Reach.find`), unique slugs for new articles, and saving many articles with a few
queries: the stored articles an input can reach are read in batches (none when the
store is empty), the rule runs in memory in input order, and the new rows go to the
driver in one executemany (`_insert_many`). The result is the one that saving the
articles one by one, in order, would give. Imports `base`, `articles`, `slugs` and `clock`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import utcnow
from service.slugs import slugify
from service.store.articles import Article, ArticleData, ArticleTopic, SaveOutcome, article_guid

_EDITABLE = (
    "title",
    "teaser",
    "body",
    "place",
    "published_at",
    "image_caption",
    "image_url",
    "source_url",
)
# Values in one `IN (...)`: far below SQLite's (32,766) and asyncpg's (32,767) limits.
_CHUNK = 2000


@dataclass(eq=False)
class _New:
    """An article this save inserts, as the rule sees it until then."""

    order: int
    key: str
    slug: str
    notify: bool
    title: str
    teaser: str
    body: str | None
    place: str
    published_at: datetime
    image_caption: str | None
    image_url: str | None
    source_url: str | None
    topics: list[str] = field(default_factory=list)


_Known = Article | _New


def _day_place(known: _Known | ArticleData) -> tuple[datetime, str]:
    return known.published_at.astimezone(UTC), known.place


def _place_in_id_order(known: _Known) -> tuple[int, int]:
    """Stored articles by id, then new ones as they will be inserted (ids after them)."""
    return (1, known.order) if isinstance(known, _New) else (0, known.id)


class _Reach:
    """The articles a save can reach, by key and by publication time and place, as they
    stand while the save goes on (new ones included, edits applied)."""

    def __init__(self, stored: Iterable[Article]) -> None:
        self.by_key: dict[str, _Known] = {}
        self.by_day: defaultdict[tuple[datetime, str], list[_Known]] = defaultdict(list)
        self.day_of: dict[_Known, tuple[datetime, str]] = {}
        for article in sorted(stored, key=_place_in_id_order):
            self.add(article, _day_place(article))

    def add(self, known: _Known, day_place: tuple[datetime, str]) -> None:
        self.by_key[known.key] = known
        self.by_day[day_place].append(known)
        self.day_of[known] = day_place

    def moved(self, known: _Known) -> None:
        """`known` was edited; its publication time or place may be new."""
        before, after = self.day_of[known], _day_place(known)
        if after != before:
            self.by_day[before].remove(known)
            self.by_day[after].append(known)
            self.by_day[after].sort(key=_place_in_id_order)
            self.day_of[known] = after

    def find(
        self, data: ArticleData, day_place: tuple[datetime, str], apart: Collection[str]
    ) -> _Known | None:
        """The stored article `data` describes: the one with its key, or one it edits.

        The rule for edits, stated here only: an article with a new key but the same
        publication day (`published_at`) and place as a stored one, and either the same
        title or the same teaser, is that article with one of the two edited (a typo fix);
        saving it updates the stored article, which keeps its key, slug and feed id. Of
        several, the oldest (lowest id) is edited. An article whose key is in `apart`
        (another entry of the same input) is never taken as edited.
        """
        found = self.by_key.get(data.key)
        if found is not None:
            return found
        for candidate in self.by_day.get(day_place, ()):
            same = candidate.title == data.title or candidate.teaser == data.teaser
            if same and candidate.key not in apart:
                return candidate
        return None


def _chunks(values: Collection[Any]) -> Iterable[list[Any]]:
    ordered = list(values)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


async def _stored_in_reach(session: AsyncSession, articles: Sequence[ArticleData]) -> list[Article]:
    """The stored articles `articles` can reach: by key, and (for those whose key is not
    stored) by publication time and place; a superset is fine, the rule filters."""
    found: dict[int, Article] = {}
    keys = {data.key for data in articles}
    for chunk in _chunks(keys):
        for article in await session.scalars(select(Article).where(Article.key.in_(chunk))):
            found[article.id] = article
    stored_keys = {article.key for article in found.values()}
    unmatched = [data for data in articles if data.key not in stored_keys]
    for start in range(0, len(unmatched), _CHUNK // 2):
        part = unmatched[start : start + _CHUNK // 2]
        query = select(Article).where(
            Article.published_at.in_(list({data.published_at for data in part})),
            Article.place.in_(list({data.place for data in part})),
        )
        for article in await session.scalars(query):
            found[article.id] = article
    return list(found.values())


class _Slugs:
    """Slugs for new articles, each the first of `base`, `base-2`, `base-3`, ... that no
    stored article and no article new in this save has."""

    def __init__(self, session: AsyncSession, *, none_stored: bool = False) -> None:
        self.session = session
        self.none_stored = none_stored  # no stored article: every stored slug is known
        self.taken: set[str] = set()  # stored slugs known, and those given in this save
        self.looked_up: set[str] = set()  # slugs whether stored is known
        self.complete: set[str] = set()  # bases whose every stored `base...` slug is known
        self.bases: dict[str, str] = {}

    def _base(self, title: str) -> str:
        base = self.bases.get(title)
        if base is None:
            base = self.bases[title] = slugify(title)
        return base

    async def look_up(self, titles: Iterable[str]) -> None:
        """Read at once which of the plain slugs of these titles are stored."""
        if self.none_stored:
            return
        bases = {self._base(title) for title in titles} - self.looked_up
        for chunk in _chunks(bases):
            query = select(Article.slug).where(Article.slug.in_(chunk))
            self.taken.update(await self.session.scalars(query))
        self.looked_up.update(bases)

    async def new(self, title: str) -> str:
        base = self._base(title)
        unknown = base not in self.looked_up or base in self.taken
        if unknown and base not in self.complete and not self.none_stored:
            # Taken (or unknown): read every stored slug it begins, suffixed ones included.
            like = select(Article.slug).where(Article.slug.like(f"{base}%"))
            self.taken.update(await self.session.scalars(like))
            self.complete.add(base)
            self.looked_up.add(base)
        slug, n = base, 2
        while slug in self.taken:
            slug, n = f"{base}-{n}", n + 1
        self.taken.add(slug)
        return slug


def _edit(known: _Known, data: ArticleData) -> bool:
    """Apply `data` to `known`; whether anything changed."""
    changed = False
    for name in _EDITABLE:
        if getattr(known, name) != getattr(data, name):
            setattr(known, name, getattr(data, name))
            changed = True
    topics = sorted(set(data.topics))
    if set(topics) != set(known.topics):
        if isinstance(known, _New):
            known.topics = topics
        else:
            known.topic_rows = [ArticleTopic(topic=t) for t in topics]
        changed = True
    return changed


async def _insert_many(
    session: AsyncSession, table: Table, names: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Insert `rows` (values of the columns `names`, in that order) with one executemany
    of the driver.

    SQLAlchemy's own executemany runs every value of every row through its column type's
    processors, and builds a parameter dictionary per row: half of saving an import. Here
    the same processors (the dialect's, so the stored values are the ones SQLAlchemy
    stores) run once per distinct value of a column, and rows go to the driver as tuples.
    """
    connection = await session.connection()
    dialect = connection.dialect
    # `inline`: no RETURNING of the new ids, which an executemany would not deliver.
    compiled = table.insert().inline().compile(dialect=dialect, column_keys=list(names))
    if compiled.positiontup is None:  # a driver of named parameters: SQLAlchemy's way
        await connection.execute(
            table.insert(), [dict(zip(names, row, strict=True)) for row in rows]
        )
        return
    order = [names.index(name) for name in compiled.positiontup]
    columns: list[list[Any]] = [[row[i] for row in rows] for i in order]
    for values, i in zip(columns, order, strict=True):
        process = table.c[names[i]].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            try:
                values[:] = _processed(values, process)
            except Exception as exc:  # refused as SQLAlchemy refuses it (a naive datetime)
                name = f"{type(exc).__module__}.{type(exc).__qualname__}"
                raise StatementError(f"({name}) {exc}", compiled.string, None, exc) from exc
    await connection.exec_driver_sql(compiled.string, list(zip(*columns, strict=True)))


def _processed(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """`process` of each value, run once per distinct value."""
    done: dict[Any, Any] = {}
    return [
        done[value] if value in done else done.setdefault(value, process(value)) for value in values
    ]


# The columns of a new article's row, in the order `_insert` gives its values.
_ROW = (
    "key",
    "guid",
    "slug",
    "notify",
    "created_at",
    "updated_at",
    "title",
    "teaser",
    "body",
    "place",
    "published_at",
    "image_caption",
    "image_url",
    "source_url",
    "source_id",
)


async def _new_ids(session: AsyncSession, table: Table, new: list[_New], before: int) -> list[int]:
    """The ids of the rows just inserted for `new`, in order."""
    above = table.c.id > before
    count, largest = (
        await session.execute(select(func.count(), func.max(table.c.id)).where(above))
    ).one()
    if count == len(new) and largest == before + len(new):
        # Exactly the ids after `before` (SQLite, whose one writer gives each row the id
        # after the largest, or PostgreSQL when no other import ran): in insertion order.
        return list(range(before + 1, largest + 1))
    wanted = {item.key for item in new}
    query = select(table.c.key, table.c.id).where(above)
    id_of = {key: id_ for key, id_ in await session.execute(query) if key in wanted}
    return [id_of[item.key] for item in new]


async def _insert(
    session: AsyncSession, new: list[_New], now: datetime, before: int, source_id: int | None
) -> list[int]:
    """Insert the new articles (from the source `source_id`, if any) and their topics in
    bulk, in order; their ids.

    `before` is the largest id stored before (0 for none). Ids come from a sequence
    (PostgreSQL) or follow the largest (SQLite), so the new rows are among those above it;
    others may be there too on PostgreSQL (committed meanwhile), told apart by key."""
    if not new:
        return []
    table = cast(Table, Article.__table__)
    rows = [
        (
            item.key,
            article_guid(item.key),
            item.slug,
            item.notify,
            now,
            now,
            item.title,
            item.teaser,
            item.body,
            item.place,
            item.published_at,
            item.image_caption,
            item.image_url,
            item.source_url,
            source_id,
        )
        for item in new
    ]
    await _insert_many(session, table, _ROW, rows)
    ids = await _new_ids(session, table, new, before)
    topics = [(id_, topic) for id_, item in zip(ids, new, strict=True) for topic in item.topics]
    if topics:
        topic_table = cast(Table, ArticleTopic.__table__)
        await _insert_many(session, topic_table, ("article_id", "topic"), topics)
    return ids


async def save_articles(
    session: AsyncSession,
    articles: Sequence[ArticleData],
    now: datetime | None = None,
    *,
    apart: Collection[str] = frozenset(),
    source_id: int | None = None,
) -> list[tuple[SaveOutcome, int]]:
    """Save `articles` in the caller's transaction as saving each in turn would: insert a
    new article, or update the stored one it describes (by the rule `_Reach.find` states,
    never one whose key is in `apart`), an earlier article of the same call included.
    `updated_at` moves only when something changed; slug, key, guid and the source that
    brought it (`source_id`) are fixed at creation. Each article's outcome and id, in order."""
    now = now or utcnow()
    before = await session.scalar(select(func.max(Article.id)))
    # Into an empty store (a first import) nothing is in reach and no slug taken.
    reach = _Reach([] if before is None else await _stored_in_reach(session, articles))
    slugs = _Slugs(session, none_stored=before is None)
    await slugs.look_up(data.title for data in articles if data.key not in reach.by_key)
    outcomes: list[tuple[SaveOutcome, _Known]] = []
    new: list[_New] = []
    for data in articles:
        day_place = _day_place(data)
        known = reach.find(data, day_place, apart)
        if known is None:
            item = _New(
                order=len(new),
                key=data.key,
                slug=await slugs.new(data.title),
                notify=data.notify,
                title=data.title,
                teaser=data.teaser,
                body=data.body,
                place=data.place,
                published_at=data.published_at,
                image_caption=data.image_caption,
                image_url=data.image_url,
                source_url=data.source_url,
                topics=sorted(set(data.topics)),
            )
            new.append(item)
            reach.add(item, day_place)
            outcomes.append((SaveOutcome.CREATED, item))
            continue
        if not _edit(known, data):
            outcomes.append((SaveOutcome.UNCHANGED, known))
            continue
        reach.moved(known)
        if isinstance(known, Article):
            known.updated_at = now
        outcomes.append((SaveOutcome.UPDATED, known))
    await session.flush()
    ids = dict(zip(new, await _insert(session, new, now, before or 0, source_id), strict=True))
    return [
        (outcome, ids[known] if isinstance(known, _New) else known.id)
        for outcome, known in outcomes
    ]


async def save_article(
    session: AsyncSession,
    data: ArticleData,
    now: datetime | None = None,
    *,
    apart: Collection[str] = frozenset(),
) -> tuple[SaveOutcome, Article]:
    """Save one article as `save_articles` does; its outcome and stored row."""
    ((outcome, id_),) = await save_articles(session, [data], now, apart=apart)
    article = await session.get(Article, id_)
    assert article is not None  # saved in this transaction
    return outcome, article

"""Polling: fetch the sources that are due, turn what they hold into articles, and
record how each fetch went.

Owns no data of its own (the `sources` records hold the schedule). Each source is claimed
with a lease before it is fetched, as ledger rows are before they are sent, so two
workers, also replicas on one PostgreSQL, never fetch one source at once. A source's
failure is recorded on it and backs off (doubling, at most a day, `Retry-After` honoured);
410, or 404 three times in a row, marks it gone; the other sources go on. A source's first
successful fetch is a backfill: its articles reach the store and the feeds, no digest.
Imports `config`, `store`, `ingest`, `metrics`, `clock` and the package's `fetch`,
`parse` and `records`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import ingest, metrics, places, processes, store
from service.clock import utcnow
from service.config import Settings
from service.errors import IngestInputError
from service.sources.fetch import AddressCheck, Fetched, Fetcher, SourceFetchError
from service.sources.parse import SourceParse, parse_source, text_of
from service.store import sources as records

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(days=1)
MAX_RETRY_AFTER = timedelta(days=7)
GONE_AFTER_NOT_FOUND = 3
_TEXT_LIMIT = 4000  # characters of an error or of notes kept on the source


class Outcome(StrEnum):
    OK = "ok"
    NOT_MODIFIED = "not_modified"
    FAILED = "failed"
    GONE = "gone"


@dataclass
class SourcePoll:
    """How one fetch of one source went."""

    name: str
    outcome: Outcome
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # entries that mention none of the source's words
    rejected: int = 0
    error: str | None = None


@dataclass
class PollReport:
    polls: list[SourcePoll] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(p.created or p.updated for p in self.polls)


@dataclass(frozen=True)
class _Source:
    """What a poll needs of a source, read once when it is claimed."""

    id: int
    name: str
    url: str
    format: str
    every: timedelta
    topics: tuple[str, ...]
    only_mentioning: tuple[str, ...]
    etag: str | None
    last_modified: str | None
    backfill: bool
    failures: int
    not_found: int

    @classmethod
    def of(cls, row: records.Source) -> _Source:
        return cls(
            id=row.id,
            name=row.name,
            url=row.url,
            format=row.format,
            every=timedelta(seconds=row.every_seconds),
            topics=tuple(row.topics or ()),
            only_mentioning=tuple(row.only_mentioning or ()),
            etag=row.etag,
            last_modified=row.last_modified,
            backfill=row.last_success_at is None,
            failures=row.failures,
            not_found=row.not_found,
        )


class _ClaimLost(Exception):
    """The source's lease ran out and another worker claimed it: this poll's work is void."""


def backoff(every: timedelta, failures: int, retry_after: float | None = None) -> timedelta:
    """When to try again after `failures` failures in a row: the interval doubled per
    failure, at most a day, and never sooner than the server's `Retry-After`."""
    # Capped in seconds, before a timedelta is made: a huge one would overflow.
    doubled = every.total_seconds() * 2 ** min(failures, 32)
    delay = timedelta(seconds=min(doubled, MAX_BACKOFF.total_seconds()))
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=min(retry_after, MAX_RETRY_AFTER.total_seconds())))
    return delay


def _short(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


def mentions(article: ingest.ArticleIn, words: Sequence[str]) -> bool:
    """Whether title, teaser or body name one of the words (at a word's start)."""
    text = " ".join([article.title, article.teaser, text_of(article.body or "")])
    return any(
        re.search(rf"(?<![\w-]){re.escape(word)}", text, re.IGNORECASE)
        for word in words
        if word.strip()
    )


class Poller:
    """Polls due sources, a few at a time, claim by claim."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        allowed: AddressCheck | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._allowed = allowed
        self.worker = f"{processes.local_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:sources"
        # A claim outlives the longest fetch and the saving after it.
        self._lease = timedelta(
            seconds=max(settings.sources_lease_seconds, 2 * settings.sources_timeout_seconds)
        )
        self._lock = asyncio.Lock()
        self._running: asyncio.Task[Any] | None = None
        self.stopping = asyncio.Event()

    async def run(self, names: Sequence[str] | None = None) -> PollReport:
        """Poll every due source (or, given `names`, those sources now, once)."""
        report = PollReport()
        async with self._lock:
            if self.stopping.is_set():
                return report
            self._running = asyncio.current_task()
            try:
                async with contextlib.AsyncExitStack() as opened:
                    await self._passes(opened, names, report)
            finally:
                self._running = None
        return report

    async def _passes(
        self, opened: contextlib.AsyncExitStack, names: Sequence[str] | None, report: PollReport
    ) -> None:
        """Claim and poll due sources until none is left. The fetcher is opened (in
        `opened`) with the first claim: its CA bundle takes tens of milliseconds of the
        event loop to load, which a tick with nothing due should not spend."""
        limit = self._settings.sources_concurrency
        fetcher: Fetcher | None = None
        while not self.stopping.is_set():
            async with self._sessions() as session, session.begin():
                ids = await records.claim_sources(
                    session, self.worker, utcnow(), self._lease, limit=limit, names=names
                )
            if not ids:
                return
            if fetcher is None:
                fetcher = Fetcher(self._settings, allowed=self._allowed)
                await opened.enter_async_context(fetcher)
            report.polls += await asyncio.gather(*(self._poll_safely(fetcher, i) for i in ids))
            if names is not None:
                return

    async def stop(self) -> None:
        """Stop polling: a fetch in flight is abandoned and its claim handed back."""
        self.stopping.set()
        running = self._running
        if running is not None and running is not asyncio.current_task():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(asyncio.wait({running}))
        async with self._lock, self._sessions() as session, session.begin():
            await records.release_sources(session, self.worker)

    async def _poll_safely(self, fetcher: Fetcher, source_id: int) -> SourcePoll:
        """Poll one source; whatever goes wrong stays with it (the others go on)."""
        try:
            return await self._poll(fetcher, source_id)
        except _ClaimLost:
            log.warning("source %s: claim lost to another worker; its result dropped", source_id)
            return SourcePoll(str(source_id), Outcome.FAILED, error="claim lost")
        except Exception as exc:
            log.exception("polling source %s failed", source_id)
            return await self._failed_unexpectedly(source_id, exc)

    async def _failed_unexpectedly(self, source_id: int, exc: Exception) -> SourcePoll:
        """Record an error nobody foresaw as a failure of the source, with its backoff (else
        the source would be fetched again at every tick)."""
        async with self._sessions() as session:
            row = await session.get(records.Source, source_id)
            source = None if row is None else _Source.of(row)
        if source is None:  # removed meanwhile
            return SourcePoll(str(source_id), Outcome.FAILED, error=repr(exc))
        try:
            return await self._failed(source, repr(exc), None, None)
        except _ClaimLost:
            return SourcePoll(source.name, Outcome.FAILED, error="claim lost")

    async def _poll(self, fetcher: Fetcher, source_id: int) -> SourcePoll:
        async with self._sessions() as session:
            row = await session.get(records.Source, source_id)
            assert row is not None, f"claimed source {source_id} vanished"
            source = _Source.of(row)
        try:
            fetched = await fetcher.fetch(
                source.url, etag=source.etag, last_modified=source.last_modified
            )
        except SourceFetchError as exc:
            return await self._failed(source, exc.reason, exc.status, exc.retry_after)
        if fetched.not_modified:
            return await self._succeeded(source, fetched, None, [])
        try:
            result = await asyncio.to_thread(
                parse_source,
                fetched.content or b"",
                fetched.content_type,
                source.format,
                fetched.url,
                place=source.name,
            )
        except IngestInputError as exc:
            return await self._failed(source, exc.reason, fetched.status, None)
        articles = await self._wanted(source, result)
        return await self._succeeded(source, fetched, result, articles)

    async def _wanted(
        self, source: _Source, result: SourceParse
    ) -> list[tuple[int, ingest.ArticleIn]]:
        """The parsed articles the source keeps: all, or those mentioning its words or a
        subscribed municipality's partner town."""
        if not source.only_mentioning:
            return list(result.parsed.articles)
        async with self._sessions() as session:
            subscribers = await store.all_subscribers(session)
        partners = [places.place_names(s)[1:] for s in subscribers if s.partner]
        words = [*source.only_mentioning, *(name for names in partners for name in names)]
        return [(n, a) for n, a in result.parsed.articles if mentions(a, words)]

    async def _succeeded(
        self,
        source: _Source,
        fetched: Fetched,
        result: SourceParse | None,
        articles: list[tuple[int, ingest.ArticleIn]],
    ) -> SourcePoll:
        now = utcnow()
        outcome = Outcome.NOT_MODIFIED if result is None else Outcome.OK
        poll = SourcePoll(source.name, outcome)
        values: dict[str, Any] = {
            "status": str(records.SourceStatus.ACTIVE),
            "last_fetch_at": now,
            "last_success_at": now,
            "last_status": fetched.status,
            "last_error": None,
            "failures": 0,
            "not_found": 0,
            "next_fetch_at": now + source.every,
            "etag": fetched.etag or source.etag,
            "last_modified": fetched.last_modified or source.last_modified,
        }
        if result is not None:
            poll.rejected = len(result.parsed.rejections)
            poll.skipped = len(result.parsed.articles) - len(articles)
            values["items"] = len(result.parsed.articles)
            values["last_notes"] = _notes(result)
        async with self._sessions() as session, session.begin():
            await self._save(session, source, articles, poll, now)
            await self._finish(session, source, values)
        self._count(source.name, outcome, now)
        log.info(
            "source %s: %s, %d new, %d updated", source.name, outcome, poll.created, poll.updated
        )
        return poll

    async def _save(
        self,
        session: AsyncSession,
        source: _Source,
        articles: list[tuple[int, ingest.ArticleIn]],
        poll: SourcePoll,
        now: datetime,
    ) -> None:
        by_key: dict[str, store.ArticleData] = {}
        for _, article in articles:
            data = article.to_data(notify=not source.backfill)
            topics = tuple(dict.fromkeys([*data.topics, *source.topics]))
            by_key[data.key] = replace(data, topics=topics)
        # Entries of one fetch with distinct keys are distinct, whatever their dates.
        saved = await store.save_articles(
            session, list(by_key.values()), now, apart=by_key.keys(), source_id=source.id
        )
        for outcome, _ in saved:
            if outcome is store.SaveOutcome.CREATED:
                poll.created += 1
            elif outcome is store.SaveOutcome.UPDATED:
                poll.updated += 1
            else:
                poll.unchanged += 1

    async def _failed(
        self, source: _Source, reason: str, status: int | None, retry_after: float | None
    ) -> SourcePoll:
        now = utcnow()
        failures = source.failures + 1
        not_found = source.not_found + 1 if status == 404 else 0
        gone = status == 410 or not_found >= GONE_AFTER_NOT_FOUND
        values: dict[str, Any] = {
            "last_fetch_at": now,
            "last_status": status,
            "last_error": _short(reason),
            "failures": failures,
            "not_found": not_found,
            "next_fetch_at": now + backoff(source.every, failures, retry_after),
        }
        if gone:
            values["status"] = str(records.SourceStatus.GONE)
        async with self._sessions() as session, session.begin():
            await self._finish(session, source, values)
        outcome = Outcome.GONE if gone else Outcome.FAILED
        self._count(source.name, outcome, None)
        log.warning("source %s: %s: %s", source.name, outcome, reason)
        return SourcePoll(source.name, outcome, error=reason)

    async def _finish(self, session: AsyncSession, source: _Source, values: dict[str, Any]) -> None:
        if not await records.finish_source(session, source.id, self.worker, values):
            raise _ClaimLost(source.id)

    @staticmethod
    def _count(name: str, outcome: Outcome, success: datetime | None) -> None:
        metrics.SOURCE_FETCHES.labels(name, str(outcome)).inc()
        if success is not None:
            metrics.SOURCE_LAST_SUCCESS.labels(name).set(success.timestamp())


def _notes(result: SourceParse) -> str | None:
    """Rejected entries and remarks, one per line, for the source's status."""
    entry = "entry" if result.format in ("rss", "atom", "jsonfeed") else "line"
    lines = [*result.notes]
    lines += [f"{entry} {r.line}: {r.item}: rejected: {r.reason}" for r in result.parsed.rejections]
    return _short("\n".join(lines)) if lines else None

"""Feed build: one build of every feed under the store's feeds lock, refusing to rewrite
feeds made for another public URL.

A build first asks the store for a fingerprint of everything feeds show (`store.
feeds_fingerprint` plus the settings that change output); when it equals the one recorded by
the last build, nothing is read or rendered. Otherwise it decides every spec, and renders only
the specs whose content changed since this process last built (a spec's signature: its
name, titles and its articles' ids and edit times), provided the store's feeds are still
the ones this process built; `write_feeds` gets what was rendered and every path wanted.

Imports `config`, `errors`, `metrics`, `store` and the other `feeds` modules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import weakref
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import metrics, store
from service.config import Settings
from service.errors import FeedsBaseUrlChangedError
from service.feeds.files import BuildReport, write_feeds
from service.feeds.fragments import render_all
from service.feeds.render import FORMATS, MUNICIPALITIES_DIR, TOPICS_DIR, FeedSpec
from service.feeds.specs import Mentions, feed_specs

log = logging.getLogger(__name__)

# Site fact: the public URL the current feeds link to.
BASE_URL_FACT = "feeds_base_url"
# Site fact: the fingerprint the current feeds were built from, and how many files they are.
FINGERPRINT_FACT = "feeds_fingerprint"
# Bump when rendering changes, so stores built by an older version rebuild once.
RENDERING = "2"


@dataclass
class _Built:
    """What this process last built into a store: its fingerprint and each spec's
    signature, and the mentions it found."""

    fingerprint: str = ""
    signatures: dict[str, str] = field(default_factory=dict)
    mentions: Mentions = field(default_factory=Mentions)


# One record per engine, gone with the engine.
_BUILT: weakref.WeakKeyDictionary[AsyncEngine, _Built] = weakref.WeakKeyDictionary()


def settings_parts(settings: Settings) -> tuple[str, ...]:
    """The settings a feed's bytes depend on."""
    return (
        RENDERING,
        settings.public_url,
        settings.site_title,
        settings.feed_author,
        str(settings.feed_size),
        settings.hub_url or "",
    )


def _signature(spec: FeedSpec, settings: tuple[str, ...]) -> str:
    """What a spec's bytes depend on: the settings, its names and its articles' versions."""
    digest = hashlib.sha256("\0".join(settings).encode())
    digest.update(f"\0{spec.stem}\0{spec.title}\0{spec.description}\0".encode())
    digest.update(spec.home_url.encode())
    versions = "".join(
        f"\0{article.id}@{article.updated_at.isoformat()}" for article in spec.articles
    )
    digest.update(versions.encode())
    return digest.hexdigest()


def _check_base_url(settings: Settings, recorded: str | None, *, force: bool) -> bool:
    """Refuse (unless `force`) to rewrite feeds built for another public URL; whether the
    public URL needs recording."""
    if recorded == settings.public_url:
        return False
    if recorded is not None:
        if not force:
            raise FeedsBaseUrlChangedError(recorded, settings.public_url)
        log.warning(
            "feeds were built for %s; rebuilding them for %s", recorded, settings.public_url
        )
    return True


async def _record(sessions: async_sessionmaker[AsyncSession], name: str, value: str) -> None:
    async with sessions() as session, session.begin():
        await store.set_fact(session, name, value)


async def _unchanged(
    settings: Settings, session: AsyncSession
) -> tuple[str, dict[str, object], str | None]:
    """The store's fingerprint now, what the last build recorded, and the public URL the
    current feeds were built for."""
    fingerprint, (fact, base_url) = await store.fingerprint_and_facts(
        session, settings_parts(settings), (FINGERPRINT_FACT, BASE_URL_FACT)
    )
    return fingerprint, json.loads(fact or "{}"), base_url


async def _build(
    settings: Settings,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    *,
    force: bool,
) -> BuildReport:
    built = _BUILT.get(engine) or _Built()
    # One read for the fingerprint, the recorded facts and the specs (on SQLite one
    # snapshot), unless the public URL is to be recorded first, before anything is published
    # for it (a transaction of its own, after this session: no session inside another).
    async with sessions() as session:
        fingerprint, recorded, base_url = await _unchanged(settings, session)
        new_url = _check_base_url(settings, base_url, force=force)
        current = recorded.get("fingerprint") == fingerprint
        read = not (current or new_url)
        specs = await feed_specs(settings, session, built.mentions) if read else None
    if new_url:  # the first build, or one for another public URL
        await _record(sessions, BASE_URL_FACT, settings.public_url)
    if current:
        return BuildReport(unchanged=int(str(recorded.get("files", 0))))
    if specs is None:
        async with sessions() as session:
            specs = await feed_specs(settings, session, built.mentions)
    if built.fingerprint != recorded.get("fingerprint"):  # another process built since
        built.signatures = {}
    parts = settings_parts(settings)
    signatures = {spec.stem: _signature(spec, parts) for spec in specs}
    changed = [spec for spec in specs if built.signatures.get(spec.stem) != signatures[spec.stem]]
    wanted = {f"{spec.stem}{suffix}" for spec in specs for suffix in FORMATS}
    report = await write_feeds(
        settings,
        render_all(settings, changed, settings.hub_url),
        wanted,
        prune=(TOPICS_DIR, MUNICIPALITIES_DIR),
        sessions=sessions,
    )
    report.unchanged += (len(specs) - len(changed)) * len(FORMATS)
    record = {"fingerprint": fingerprint, "files": len(wanted)}
    await _record(sessions, FINGERPRINT_FACT, json.dumps(record))
    _BUILT[engine] = _Built(fingerprint, signatures, built.mentions)
    return report


async def build_feeds(
    settings: Settings,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    *,
    wait: bool = False,
    force: bool = False,
) -> BuildReport | None:
    """Build all feeds; None when another process is building them right now, or, with
    `wait`, after it has finished (so the build sees what the caller just stored).

    Raises `FeedsBaseUrlChangedError` when the feeds were built for another public URL,
    unless `force` (the server's own builds force: its settings are the live ones).
    """
    started = time.perf_counter()
    # Read-only and before the lock: when the store still shows what the last build (for
    # this public URL: it is part of the fingerprint) recorded, there is nothing to do.
    async with sessions() as session:
        fingerprint, recorded, _ = await _unchanged(settings, session)
    if recorded.get("fingerprint") == fingerprint:
        report = BuildReport(unchanged=int(str(recorded.get("files", 0))))
        report.seconds = time.perf_counter() - started
        log.debug("feeds unchanged (%d files)", report.unchanged)
        return report
    async with store.exclusive(engine, "feeds", wait=wait) as acquired:
        if not acquired:
            log.info("feed build skipped: another process holds the feeds lock")
            return None
        report = await _build(settings, engine, sessions, force=force)
    report.seconds = time.perf_counter() - started
    metrics.FEED_BUILD_SECONDS.observe(report.seconds)
    log.info(
        "feeds built: %d changed, %d unchanged, %d removed in %.3fs",
        len(report.changed),
        report.unchanged,
        len(report.removed),
        report.seconds,
    )
    return report

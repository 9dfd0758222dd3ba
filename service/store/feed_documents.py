"""Feed documents: the bytes of every published feed, the source of truth for every replica.

Owns the `feed_documents` table (one row per feed path below `/feeds/`: its bytes, a
content-derived ETag, when its bytes last changed, and the publication that changed them)
and `feed_publication`, one row whose `version` moves with every publication that changed
anything. A replica polls that one row and reloads only the documents of newer
publications. Publishing is done by the feed build under the feeds lock; the version is
moved by one `UPDATE ... RETURNING`, so it never goes backwards. Imports only `base`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from service.clock import utcnow
from service.store.base import Base, UTCDateTime

# The row of `feed_publication` (there is only one).
_PUBLICATION_ID = 1
# The most paths one query names in an IN list; beyond that, chunks (or the whole table).
_IN_LIST = 500


class FeedDocument(Base):
    """One feed as served at `/feeds/<path>`."""

    __tablename__ = "feed_documents"

    path: Mapped[str] = mapped_column(String(300), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    # Quoted-string content of the ETag (no quotes): a hash of the bytes, so every replica
    # gives the same feed the same ETag.
    etag: Mapped[str] = mapped_column(String(64))
    # When these bytes were first published (Last-Modified).
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The publication (`FeedPublication.version`) that last changed this row.
    version: Mapped[int] = mapped_column(BigInteger, index=True)


class FeedPublication(Base):
    """The one row whose `version` moves whenever a feed document is added, changed or
    removed."""

    __tablename__ = "feed_publication"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


def content_etag(content: bytes) -> str:
    """The ETag (without quotes) of feed bytes: the same bytes give the same tag anywhere."""
    return hashlib.blake2b(content, digest_size=16).hexdigest()


@dataclass
class Publication:
    """What one `publish_feed_documents` changed: paths added or changed, paths removed,
    and the version that now stands (unchanged when nothing changed)."""

    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    version: int = 0


async def feed_publication_version(session: AsyncSession) -> int:
    """The current publication version (0 before the first publication)."""
    version = await session.scalar(
        select(FeedPublication.version).where(FeedPublication.id == _PUBLICATION_ID)
    )
    return int(version or 0)


async def feed_document_versions(session: AsyncSession) -> dict[str, int]:
    """Every published path and the version that last changed it (no bytes)."""
    rows = await session.execute(select(FeedDocument.path, FeedDocument.version))
    return {path: int(version) for path, version in rows.all()}


async def feed_documents(session: AsyncSession, paths: Collection[str]) -> list[FeedDocument]:
    """The documents of `paths` (bytes included); paths not published are left out."""
    found: list[FeedDocument] = []
    wanted = sorted(paths)
    for start in range(0, len(wanted), _IN_LIST):
        chunk = wanted[start : start + _IN_LIST]
        found.extend(
            await session.scalars(select(FeedDocument).where(FeedDocument.path.in_(chunk)))
        )
    return found


async def publish_feed_documents(
    session: AsyncSession,
    rendered: Mapping[str, bytes],
    keep: Collection[str],
    prune: Sequence[str],
) -> Publication:
    """Store each rendered document whose bytes differ from the published ones, and remove
    published documents below a `prune` folder that are not in `keep`; moves the version
    once if anything changed. The caller holds the feeds lock and commits."""
    etags = {path: content_etag(content) for path, content in rendered.items()}
    tags = select(FeedDocument.path, FeedDocument.etag)
    partial = len(rendered) <= _IN_LIST
    if partial:  # only its own paths: reading 33,000 tags cost more than a second query
        tags = tags.where(FeedDocument.path.in_(list(rendered)))
    published: dict[str, str] = {p: e for p, e in (await session.execute(tags)).all()}
    changed = [path for path, etag in etags.items() if published.get(path) != etag]
    removed: list[str] = []
    if prune:
        folders = tuple(f"{folder.rstrip('/')}/" for folder in prune)
        paths = await session.scalars(select(FeedDocument.path)) if partial else published
        removed = sorted(p for p in paths if p.startswith(folders) and p not in keep)
    if not changed and not removed:
        return Publication(version=await feed_publication_version(session))
    version = await _next_version(session)
    now = utcnow()
    rows = [
        {
            "path": p,
            "content": rendered[p],
            "etag": etags[p],
            "modified_at": now,
            "version": version,
        }
        for p in changed
    ]
    updates = [row for row in rows if row["path"] in published]
    inserts = [row for row in rows if row["path"] not in published]
    if updates:  # bulk UPDATE by primary key
        await session.execute(update(FeedDocument), updates)
    if inserts:
        await session.execute(insert(FeedDocument), inserts)
    for start in range(0, len(removed), _IN_LIST):
        chunk = removed[start : start + _IN_LIST]
        await session.execute(delete(FeedDocument).where(FeedDocument.path.in_(chunk)))
    return Publication(changed=changed, removed=removed, version=version)


async def _next_version(session: AsyncSession) -> int:
    """Move the publication version by one (creating its row the first time)."""
    moved = await session.scalar(
        update(FeedPublication)
        .where(FeedPublication.id == _PUBLICATION_ID)
        .values(version=FeedPublication.version + 1)
        .returning(FeedPublication.version)
    )
    if moved is not None:
        return int(moved)
    session.add(FeedPublication(id=_PUBLICATION_ID, version=1))
    await session.flush()
    return 1

"""Feed publication: rendered feeds go into the store (the source of truth every replica
serves from), and, when `settings.feeds_dir` is set, into files for a reverse proxy.

Both only change what changed: a document whose bytes are the same keeps its ETag and
Last-Modified, a file its mtime; feeds no longer called for are removed from both. The
export is written while the store publishes (its files follow from the rendered bytes
alone), by a few threads, so a build's `fsync`s overlap each other and its store work.
Imports `config`, `store` and `feeds.render`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import store
from service.config import Settings
from service.feeds.render import FORMATS

# How many files the export writes at once.
_WRITERS = 8


@dataclass
class BuildReport:
    # The feeds whose bytes changed in the store, as paths below `/feeds/` ("themen/x.atom").
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    # The feeds removed from the store (no longer called for), as paths like `changed`.
    removed: list[str] = field(default_factory=list)
    # Files written into the export folder (none without `settings.feeds_dir`).
    written: list[Path] = field(default_factory=list)
    # The store's feed publication version after this build.
    version: int = 0
    seconds: float = 0.0


def write_if_changed(path: Path, content: bytes) -> bool:
    """Atomically replace `path` with `content` unless it already holds exactly that."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == content:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def export_feeds(
    folder: Path, documents: Mapping[str, bytes], removed: Iterable[str] = ()
) -> list[Path]:
    """Write the documents whose bytes changed into `folder` and delete the `removed`
    ones; the files written. Files are written by a few threads at once: most of a file's
    time is its `fsync`, which releases the GIL and which the file system can batch."""
    paths = [folder / name for name in documents]
    with ThreadPoolExecutor(max(1, min(_WRITERS, len(paths))), "feeds-export") as pool:
        wrote = list(pool.map(write_if_changed, paths, documents.values()))
    for name in removed:
        path = folder / name
        if path.suffix in FORMATS:
            path.unlink(missing_ok=True)
    return [path for path, written in zip(paths, wrote, strict=True) if written]


def _stale_files(folder: Path, keep: Collection[str], prune: Sequence[str]) -> list[str]:
    """Feed files in the export's `prune` folders that are not kept (left by an export
    made while the store said otherwise, e.g. by a process that was stopped)."""
    # Compared as names listed as strings: resolving, globbing and sorting 30,000 `Path`s
    # took seconds.
    stale = []
    for sub in prune:
        directory = folder / sub
        for file in sorted(os.listdir(directory)) if directory.is_dir() else []:
            name = f"{sub.rstrip('/')}/{file}"
            if os.path.splitext(file)[1] in FORMATS and name not in keep:
                stale.append(name)
    return stale


async def write_feeds(
    settings: Settings,
    rendered: Mapping[str, bytes],
    wanted: Collection[str] | None = None,
    prune: Sequence[str] = (),
    *,
    sessions: async_sessionmaker[AsyncSession],
) -> BuildReport:
    """Publish each rendered feed (path below `/feeds/` → bytes) whose bytes changed, then
    remove the feeds in the `prune` folders that are not `wanted` (a topic nobody uses any
    more, a municipality that left). `wanted` defaults to the rendered paths; a partial
    build passes every path the store calls for. The caller holds the feeds lock. With
    `settings.feeds_dir`, the export folder is written alongside, in worker threads."""
    keep = set(wanted or rendered)
    folder = settings.feeds_dir
    # The export folder is written in worker threads while the store publishes: its files
    # depend only on the rendered bytes and on what is kept, not on the publication.
    export = None
    if folder is not None:
        export = asyncio.ensure_future(asyncio.to_thread(_export, folder, rendered, keep, prune))
    try:
        async with sessions() as session, session.begin():
            publication = await store.publish_feed_documents(session, rendered, keep, prune)
    except BaseException:
        if export is not None:  # let the writers finish; the store's error is the one raised
            await asyncio.wait([export])
            if not export.cancelled():
                export.exception()
        raise
    written = await export if export is not None else []
    return BuildReport(
        changed=publication.changed,
        unchanged=len(rendered) - len(publication.changed),
        removed=publication.removed,
        written=written,
        version=publication.version,
    )


def _export(
    folder: Path, rendered: Mapping[str, bytes], keep: Collection[str], prune: Sequence[str]
) -> list[Path]:
    """Write what changed into the export folder and remove the feeds in `prune` folders
    that are not kept (among them any the publication removes from the store)."""
    return export_feeds(folder, rendered, _stale_files(folder, keep, prune))

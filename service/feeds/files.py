"""Feed publication: rendered feeds go into the store (the source of truth every replica
serves from), and, when `settings.feeds_dir` is set, into files for a reverse proxy.

Both only change what changed: a document whose bytes are the same keeps its ETag and
Last-Modified, a file its mtime; feeds no longer called for are removed from both.
Imports `config`, `store` and `feeds.render`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import store
from service.config import Settings
from service.feeds.render import FORMATS


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
    ones; the files written."""
    written = [
        folder / name
        for name, content in documents.items()
        if write_if_changed(folder / name, content)
    ]
    for name in removed:
        path = folder / name
        if path.suffix in FORMATS:
            path.unlink(missing_ok=True)
    return written


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
    `settings.feeds_dir`, the export folder follows."""
    keep = set(wanted or rendered)
    async with sessions() as session, session.begin():
        publication = await store.publish_feed_documents(session, rendered, keep, prune)
    report = BuildReport(
        changed=publication.changed,
        unchanged=len(rendered) - len(publication.changed),
        removed=publication.removed,
        version=publication.version,
    )
    if settings.feeds_dir is not None:
        folder = settings.feeds_dir
        stale = set(publication.removed) | set(_stale_files(folder, keep, prune))
        report.written = export_feeds(folder, rendered, sorted(stale))
    return report

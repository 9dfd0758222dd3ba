"""Feed files: writing rendered feeds into `settings.feeds_dir`, atomically and only when
their bytes change, and removing the ones no longer called for.

Imports `config` and `feeds.render`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.config import Settings
from service.feeds.render import FORMATS


@dataclass
class BuildReport:
    written: list[Path] = field(default_factory=list)
    # The feeds whose bytes changed, as paths below the feeds folder ("themen/x.atom").
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[Path] = field(default_factory=list)
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


def write_feeds(
    settings: Settings,
    rendered: Mapping[str, bytes],
    wanted: Collection[str] | None = None,
    prune: Sequence[str] = (),
) -> BuildReport:
    """Write each rendered feed (path below the feeds folder → bytes) whose bytes changed,
    then delete feeds in the `prune` folders that are not `wanted` (a topic nobody uses any
    more, a municipality that left). `wanted` defaults to the rendered paths; a partial
    build passes every path the store calls for."""
    report = BuildReport()
    for name, content in rendered.items():
        path = settings.feeds_dir / name
        if write_if_changed(path, content):
            report.written.append(path)
            report.changed.append(name)
        else:
            report.unchanged += 1
    # Compared as names below the feeds folder, listed as strings: resolving, globbing and
    # sorting 30,000 `Path`s took seconds.
    keep = set(wanted or rendered)
    for name in prune:
        folder = settings.feeds_dir / name
        files = sorted(os.listdir(folder)) if folder.is_dir() else []
        for file in files:
            if os.path.splitext(file)[1] in FORMATS and f"{name}/{file}" not in keep:
                path = folder / file
                path.unlink(missing_ok=True)
                report.removed.append(path)
    return report

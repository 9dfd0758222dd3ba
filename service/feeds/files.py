"""Feed files: writing rendered feeds into `settings.feeds_dir`, atomically and only when
their bytes change, and removing the ones no longer called for.

Imports `config` and `feeds.render`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.config import Settings
from service.feeds.render import RENDERERS, FeedSpec


@dataclass
class BuildReport:
    written: list[Path] = field(default_factory=list)
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
    settings: Settings, specs: Sequence[FeedSpec], prune: Sequence[str] = ()
) -> BuildReport:
    """Write every format of each spec, then delete feeds in the `prune` folders that no
    spec produced (a topic nobody uses any more, a municipality that left)."""
    report = BuildReport()
    produced: set[Path] = set()
    for spec in specs:
        for suffix, render in RENDERERS.items():
            path = settings.feeds_dir / f"{spec.stem}{suffix}"
            produced.add(path.resolve())
            if write_if_changed(path, render(settings, spec)):
                report.written.append(path)
            else:
                report.unchanged += 1
    for folder in (settings.feeds_dir / name for name in prune):
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.suffix in RENDERERS and path.resolve() not in produced:
                path.unlink(missing_ok=True)
                report.removed.append(path)
    return report

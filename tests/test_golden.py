"""Golden files: the demo listing in, the exact feeds a reader gets out.

Regenerate after an intended change with `make golden`, then review the diff.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import feedparser
import pytest

from service import feeds

from .helpers import DATA, import_demo, sqlite_only

GOLDEN = DATA / "demo"
IMPORTED_AT = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
UPDATE = os.environ.get("PARTNERPOST_UPDATE_GOLDEN") == "1"


@sqlite_only
@pytest.mark.parametrize("name", ["artikel.xml", "artikel.atom", "artikel.json"])
async def test_demo_feeds_match_the_golden_files(sessions, settings, engine, name):
    await import_demo(sessions, now=IMPORTED_AT)
    await feeds.build_feeds(settings, engine, sessions)
    produced = (settings.feeds_dir / name).read_bytes()

    expected_path = GOLDEN / name
    if UPDATE:
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_bytes(produced)
    assert produced == expected_path.read_bytes()
    if not name.endswith(".json"):
        assert not feedparser.parse(expected_path.read_bytes()).bozo

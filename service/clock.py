"""The clock: the agency's time zone and "now" in UTC. Imports nothing of ours."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

# Periods, feed dates and every date a person reads are in the agency's time zone.
BERLIN = ZoneInfo("Europe/Berlin")


def utcnow() -> datetime:
    return datetime.now(UTC)

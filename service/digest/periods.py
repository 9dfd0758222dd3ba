"""Digest periods: when each frequency's period ends (a cron in Europe/Berlin), the
German label of the days it covers, and the path of its archive page.

Owns no data. Imports `config`, `store` (Period, Frequency) and `clock`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger
from babel.dates import format_date

from service import store
from service.clock import BERLIN
from service.config import Settings

# The archive's readable German name of each frequency (`/archiv/woechentlich/2026-11-23`).
ARCHIVE_SLUGS = {
    store.Frequency.DAILY: "taeglich",
    store.Frequency.WEEKLY: "woechentlich",
    store.Frequency.MONTHLY: "monatlich",
}
_LOOKBACK = timedelta(days=70)  # covers two period ends of any frequency
_FIRST_LOOKBACK = timedelta(hours=1)


def cron_of(settings: Settings, frequency: store.Frequency) -> str:
    """The crontab line at which periods of this frequency end."""
    return {
        store.Frequency.DAILY: settings.digest_cron_daily,
        store.Frequency.WEEKLY: settings.digest_cron_weekly,
        store.Frequency.MONTHLY: settings.digest_cron_monthly,
    }[frequency]


def _fire_times(trigger: CronTrigger, since: datetime, until: datetime) -> list[datetime]:
    """The trigger's fire times from `since` to `until`, oldest first."""
    ends: list[datetime] = []
    moment = since
    while True:
        fire = trigger.get_next_fire_time(ends[-1] if ends else None, moment)
        if fire is None or fire > until:
            return ends
        ends.append(fire)
        moment = fire + timedelta(seconds=1)


def latest_period(settings: Settings, frequency: store.Frequency, at: datetime) -> store.Period:
    """The newest period of this frequency that has ended at `at`."""
    cron = cron_of(settings, frequency)
    trigger = CronTrigger.from_crontab(cron, timezone=BERLIN)
    # Look back an hour, then four times as far each time up to _LOOKBACK: a cron that
    # fires every minute is answered from an hour of fire times, not from 70 days of them.
    lookback = _FIRST_LOOKBACK
    while True:
        ends = _fire_times(trigger, at - min(lookback, _LOOKBACK), at)
        if len(ends) >= 2:
            return store.Period(frequency, ends[-2].astimezone(UTC), ends[-1].astimezone(UTC))
        if lookback >= _LOOKBACK:
            raise ValueError(f"cron {cron!r} fires too rarely")
        lookback *= 4


def next_period_end(settings: Settings, frequency: store.Frequency, at: datetime) -> datetime:
    """When the next period of this frequency ends after `at` (its digests go out then)."""
    trigger = CronTrigger.from_crontab(cron_of(settings, frequency), timezone=BERLIN)
    fire: datetime | None = trigger.get_next_fire_time(None, at)
    if fire is None:  # a crontab line always fires again; kept for the type checker
        raise ValueError(f"cron {cron_of(settings, frequency)!r} never fires again")
    return fire.astimezone(UTC)


def _german_span(first: date, last: date) -> str:
    """`16.–22. November 2026`: the days from `first` to `last`, the month written out."""
    # Babel's German date intervals abbreviate the month ("16.–22. Nov. 2026").
    if first == last:
        return format_date(first, "d. MMMM y", locale="de")
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}.–{format_date(last, 'd. MMMM y', locale='de')}"
    if first.year == last.year:
        return (
            f"{format_date(first, 'd. MMMM', locale='de')} – "
            f"{format_date(last, 'd. MMMM y', locale='de')}"
        )
    return (
        f"{format_date(first, 'd. MMMM y', locale='de')} – "
        f"{format_date(last, 'd. MMMM y', locale='de')}"
    )


def first_day(period: store.Period) -> date:
    """The day in Berlin the period starts on, which names its archive page."""
    return period.start.astimezone(BERLIN).date()


def archive_path(period: store.Period) -> str:
    """`archiv/woechentlich/2026-11-23`: the period's archive page below the base URL."""
    return f"archiv/{ARCHIVE_SLUGS[period.frequency]}/{first_day(period).isoformat()}"


def period_label(period: store.Period) -> str:
    """`Wochenüberblick 16.–22. November 2026`: the days the period covers."""
    first = first_day(period)
    # A week from Monday 07:00 to Monday 07:00 is Monday to Sunday for a reader.
    last = max(first, (period.end.astimezone(BERLIN) - timedelta(days=1)).date())
    if period.frequency is store.Frequency.MONTHLY:
        return f"Monatsüberblick {format_date(first, 'MMMM y', locale='de')}"
    if period.frequency is store.Frequency.DAILY:
        return f"Tagesüberblick {_german_span(first, last)}"
    return f"Wochenüberblick {_german_span(first, last)}"

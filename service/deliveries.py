"""Deliveries as operators see and steer them: period names people type, and the rules of
a retry they ask for (one row, or every retrying or failed row of a period).

Owns no data (the ledger is `store`'s, which makes each retry a conditional update). A
retry makes a waiting row due now, or a failed row pending again with its attempts counted
afresh; the digest runner sends it at its next tick. A row that was sent, or may have
arrived, is never made pending again: no second copy of a digest. Every refusal carries
a reason code with an English text (command line) and a German one (console). Imports
`errors`, `clock`, `store` and `digest`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from service import digest, store
from service.clock import BERLIN
from service.errors import PartnerpostError

_PERIOD = re.compile(
    r"(?P<frequency>[a-z]+):(?P<day>\d{4}-\d{2}-\d{2})(?P<time>T\d{2}:\d{2}Z)?", re.IGNORECASE
)
RETRYABLE_STATES = (store.RETRYING, str(store.DeliveryStatus.FAILED))


class PeriodNameError(PartnerpostError, ValueError):
    """A period given on the command line is neither `FREQUENCY:YYYY-MM-DD` nor a key."""

    def __init__(self, text: str) -> None:
        self.text = text
        frequencies = ", ".join(store.Frequency)
        super().__init__(
            f"period {text!r} is neither FREQUENCY:YYYY-MM-DD (the day its digest went out, "
            f"Berlin time; frequency one of {frequencies}) nor a period key such as "
            "weekly:2026-11-23T06:00Z"
        )


def period_name(period_key: str, end: datetime) -> str:
    """How lists name a period: `weekly:2026-11-23`, its frequency and the day (in Berlin)
    its digest was due."""
    return f"{period_key.partition(':')[0]}:{end.astimezone(BERLIN).date().isoformat()}"


def period_label(summary: store.PeriodSummary) -> str:
    """The German label of a period (`Wochenüberblick 16.–22. November 2026`)."""
    return digest.period_label(store.Period(summary.frequency, summary.start, summary.end))


@dataclass(frozen=True)
class PeriodRef:
    """A period as given by a person: an exact key, or a frequency and a day."""

    frequency: store.Frequency
    day: date | None = None
    key: str | None = None

    @classmethod
    def parse(cls, text: str) -> PeriodRef:
        """`weekly:2026-11-23` (any period of the frequency whose digest was due that day)
        or an exact key `weekly:2026-11-23T06:00Z`; raises `PeriodNameError`."""
        match = _PERIOD.fullmatch(text.strip())
        if match is None or match["frequency"].lower() not in set(store.Frequency):
            raise PeriodNameError(text)
        frequency = store.Frequency(match["frequency"].lower())
        try:
            day = date.fromisoformat(match["day"])
        except ValueError as exc:
            raise PeriodNameError(text) from exc
        if match["time"]:
            return cls(frequency, key=f"{frequency}:{match['day']}{match['time'].upper()}")
        return cls(frequency, day=day)

    async def keys(self, session: AsyncSession) -> list[str]:
        """The keys of the ledger's periods this names (none when none was planned)."""
        if self.key is not None:
            summaries = await store.period_summaries(session, keys=[self.key])
            return [s.key for s in summaries]
        assert self.day is not None
        since = datetime.combine(self.day, time(), BERLIN)
        until = datetime.combine(self.day + timedelta(days=1), time(), BERLIN)
        return await store.period_keys_ending(session, self.frequency, since, until)


class Reason(StrEnum):
    """Why a row was not made due: the key of the message people read."""

    UNKNOWN = "unknown"
    SENT = "sent"
    UNCERTAIN = "uncertain"
    SENDING = "sending"
    EMPTY = "empty"
    SUPERSEDED = "superseded"
    NEWER_DIGEST = "newer-digest"
    ADDRESS_INACTIVE = "address-inactive"
    NOT_RETRYABLE = "not-retryable"


_ENGLISH = {
    Reason.UNKNOWN: "no such delivery",
    Reason.SENT: "was sent already; a digest is never sent twice",
    Reason.UNCERTAIN: "may have arrived (no reply to the end of the message); never sent again",
    Reason.SENDING: "is being sent right now",
    Reason.EMPTY: "had nothing new to send",
    Reason.SUPERSEDED: "was superseded: a newer digest carries its articles",
    Reason.NEWER_DIGEST: "a newer digest ({detail}) carries its articles already",
    Reason.ADDRESS_INACTIVE: "the address is {detail}; nothing would be sent to it",
    Reason.NOT_RETRYABLE: "is {detail}, not retrying or failed",
}
_GERMAN = {
    Reason.UNKNOWN: "Diese Zustellung gibt es nicht.",
    Reason.SENT: "Bereits versandt; ein Überblick wird nie zweimal verschickt.",
    Reason.UNCERTAIN: "Ist möglicherweise angekommen (keine Antwort des Servers); "
    "wird nie erneut versandt.",
    Reason.SENDING: "Wird gerade versandt.",
    Reason.EMPTY: "Es gab nichts Neues zu versenden.",
    Reason.SUPERSEDED: "Ersetzt: ein neuerer Überblick enthält ihre Beiträge.",
    Reason.NEWER_DIGEST: "Ein neuerer Überblick ({detail}) enthält ihre Beiträge bereits.",
    Reason.ADDRESS_INACTIVE: "Die Adresse ist nicht aktiv ({detail}).",
    Reason.NOT_RETRYABLE: "Status {detail}: weder in Wiederholung noch fehlgeschlagen.",
}
_BY_STATE = {
    "sent": Reason.SENT,
    "uncertain": Reason.UNCERTAIN,
    "sending": Reason.SENDING,
    "empty": Reason.EMPTY,
    "superseded": Reason.SUPERSEDED,
}


@dataclass(frozen=True)
class Refusal:
    """A row a retry left as it was, and why."""

    delivery_id: int
    reason: Reason
    email: str | None = None
    detail: str = ""

    @property
    def message(self) -> str:
        """English, for the command line and logs."""
        return _ENGLISH[self.reason].format(detail=self.detail)

    @property
    def german(self) -> str:
        """German, for the console."""
        return _GERMAN[self.reason].format(detail=self.detail)


@dataclass
class RetryReport:
    """What a retry did: rows made due now, rows already due, rows refused."""

    retried: list[int] = field(default_factory=list)
    already_due: list[int] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def summary(self) -> str:
        """`retried 2, already due 0, refused 1`: the command line's last line."""
        return (
            f"retried {len(self.retried)}, already due {len(self.already_due)}, "
            f"refused {len(self.refused)}"
        )


async def retry_deliveries(
    session: AsyncSession, delivery_ids: Sequence[int], now: datetime
) -> RetryReport:
    """Make these rows due now: a retrying one at once, a failed one pending again with
    its attempts afresh. Refuses every other row with its reason; run it in a
    transaction."""
    ids = sorted(set(delivery_ids))
    report = RetryReport()
    changed = await store.make_deliveries_due(session, now, ids=ids)
    changed += await store.reopen_failed_deliveries(session, now, ids=ids)
    report.retried = sorted(changed)
    left = [i for i in ids if i not in set(changed)]
    if left:
        found = store.DeliveryFilter(ids=tuple(left))
        entries = await store.find_deliveries(session, found, limit=None)
        known = {entry.id for entry in entries}
        report.refused += [Refusal(i, Reason.UNKNOWN) for i in left if i not in known]
        await _explain(session, entries, report, now)
    return report


async def retry_period(
    session: AsyncSession,
    period_keys: Sequence[str],
    now: datetime,
    state: str = store.RETRYING,
) -> RetryReport:
    """Make every row of these periods in `state` (retrying or failed) due now; the failed
    rows that must stay failed are refused with their reasons. Run it in a transaction."""
    if state not in RETRYABLE_STATES:
        raise ValueError(f"state {state!r} is not one of {RETRYABLE_STATES}")
    report = RetryReport()
    if not period_keys:
        return report
    if state == store.RETRYING:
        report.retried = await store.make_deliveries_due(session, now, period_keys=period_keys)
        return report
    report.retried = await store.reopen_failed_deliveries(session, now, period_keys=period_keys)
    left = store.DeliveryFilter(period_keys=tuple(period_keys), states=(state,))
    await _explain(session, await store.find_deliveries(session, left, limit=None), report, now)
    return report


async def _explain(
    session: AsyncSession,
    entries: Sequence[store.HistoryEntry],
    report: RetryReport,
    now: datetime,
) -> None:
    """Sort the rows a retry did not change into already due and refused, with reasons,
    from their state as this transaction sees it now."""
    newer = await store.later_periods(session, [e.id for e in entries]) if entries else {}
    for entry in entries:
        refusal = _refusal(entry, newer.get(entry.id), now)
        if refusal is None:
            report.already_due.append(entry.id)
        else:
            report.refused.append(refusal)


def _refusal(entry: store.HistoryEntry, newer: str | None, now: datetime) -> Refusal | None:
    """Why a row a retry did not change stays as it is; None when it is due already."""

    def refuse(reason: Reason, detail: str = "") -> Refusal:
        return Refusal(entry.id, reason, entry.email, detail)

    if entry.state in _BY_STATE:
        return refuse(_BY_STATE[entry.state])
    if entry.state in ("pending", store.RETRYING):
        return None if entry.next_attempt_at <= now else refuse(Reason.SENDING)
    if entry.state == "failed":
        if entry.address_status != store.AddressStatus.ACTIVE:
            return refuse(Reason.ADDRESS_INACTIVE, entry.address_status)
        if newer is not None:
            return refuse(Reason.NEWER_DIGEST, newer)
    return refuse(Reason.NOT_RETRYABLE, entry.state)

"""The console's Übersicht (`/verwaltung/`): what goes out next and how recent runs went.

Owns the overview page: the next digest of each frequency and when it goes out (the
scheduler's cron settings), the newest periods with their rows sent, skipped, failed,
retrying and uncertain, failing sources, and addresses whose digest failed recently.
Imports `store`, `digest` and the console's `access` and `frame`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from service import digest, store
from service.web.console.access import CurrentOperator
from service.web.console.frame import render_console, settings_of
from service.web.dependencies import Session

router = APIRouter()

FREQUENCY_LABELS = {
    store.Frequency.DAILY: "Täglich",
    store.Frequency.WEEKLY: "Wöchentlich",
    store.Frequency.MONTHLY: "Monatlich",
}
RECENT = timedelta(days=30)
S = store.DeliveryStatus


@dataclass(frozen=True)
class NextDigest:
    frequency: str
    label: str  # the period it ends
    at: datetime


@dataclass(frozen=True)
class RunRow:
    label: str
    period_key: str
    sent: int
    skipped: int
    failed: int
    retrying: int
    uncertain: int


def run_row(summary: store.PeriodSummary) -> RunRow:
    """A period's rows counted as the console's tables show them."""

    def count(*states: str) -> int:
        return sum(summary.count(state) for state in states)

    period = store.Period(summary.frequency, summary.start, summary.end)
    return RunRow(
        label=digest.period_label(period),
        period_key=summary.key,
        sent=count(S.SENT),
        skipped=count(S.EMPTY, S.SUPERSEDED),
        failed=count(S.FAILED),
        # Not done yet: due for a first try, being sent, or waiting for a retry.
        retrying=count(S.PENDING, S.SENDING, store.RETRYING),
        uncertain=count(S.UNCERTAIN),
    )


def _next_digests(request: Request, now: datetime) -> list[NextDigest]:
    settings = settings_of(request)
    found = []
    for frequency in store.Frequency:
        end = digest.next_period_end(settings, frequency, now)
        start = digest.latest_period(settings, frequency, end).start
        label = digest.period_label(store.Period(frequency, start, end))
        found.append(NextDigest(FREQUENCY_LABELS[frequency], label, end))
    return found


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def overview(request: Request, operator: CurrentOperator, session: Session) -> HTMLResponse:
    now = store.utcnow()
    runs = [run_row(counts) for counts in await store.period_summaries(session, limit=10)]
    return render_console(
        request,
        "overview",
        operator,
        section="uebersicht",
        next_digests=_next_digests(request, now),
        runs=runs,
        failing_sources=await store.sources.failing_sources(session),
        failures=await store.recent_failures(session, now - RECENT),
    )

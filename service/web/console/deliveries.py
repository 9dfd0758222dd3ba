"""The console's Zustellungen (`/verwaltung/zustellungen`): what the ledger sent, per
period, and the retries an operator asks for.

Owns the list of the ledger's periods (newest first, paged, optionally of one frequency)
with their rows counted by state; a period's page with its failed and retrying rows (last
SMTP reply, attempts, when); and the forms that retry one row, or every retrying or
failed row of a period. The rules of a retry are `deliveries`'; after one that made rows
due, the runtime's retry job is asked to run now. Imports `store`, `deliveries`, `runtime`,
`web.dependencies` and the console's `access`, `cookies`, `frame` and `overview`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession

from service import deliveries, store
from service.runtime import Runtime
from service.web.console.access import CheckedForm, CurrentOperator
from service.web.console.cookies import console_path
from service.web.console.frame import redirect, render_console, settings_of
from service.web.console.overview import FREQUENCY_LABELS, run_row
from service.web.dependencies import AppRuntime, Session, Sessions

router = APIRouter()

PERIODS_PER_PAGE = 20
ROWS_PER_PAGE = 50
OPEN_STATES = (str(store.DeliveryStatus.FAILED), store.RETRYING)
STATE_LABELS = {
    str(store.DeliveryStatus.FAILED): "fehlgeschlagen",
    store.RETRYING: "wird wiederholt",
}
_REFUSALS_SHOWN = 3  # the notice travels in a cookie: a few reasons, then a count


@dataclass(frozen=True)
class Pager:
    """Where a paged list is, with the links to the neighbouring pages (None at an end)."""

    number: int
    pages: int
    newer: str | None
    older: str | None


def _pager(href: str, params: dict[str, str], number: int, total: int, size: int) -> Pager:
    pages = max(1, -(-total // size))

    def link(page: int) -> str:
        return f"{href}?{urlencode({**params, 'seite': str(page)})}"

    return Pager(
        number,
        pages,
        link(number - 1) if number > 1 else None,
        link(number + 1) if number < pages else None,
    )


def _page_number(text: str) -> int:
    """The page asked for; anything but a positive number is the first page."""
    return int(text) if text.isdecimal() and 0 < int(text) < 1_000_000 else 1


def _frequency(text: str) -> store.Frequency | None:
    return store.Frequency(text) if text in set(store.Frequency) else None


def _period_path(key: str, action: str = "") -> str:
    """A period's page (or one of its forms) below the console."""
    return f"zustellungen/{quote(key, safe='')}" + (f"/{action}" if action else "")


@router.get("/zustellungen", response_class=HTMLResponse, include_in_schema=False)
async def periods(
    request: Request,
    operator: CurrentOperator,
    session: Session,
    rhythmus: str = "",
    seite: str = "",
    periode: str = "",
) -> HTMLResponse:
    """The periods, newest first; with `periode`, that period's page."""
    if periode:
        return await _period_page(request, operator, session, periode, seite)
    frequency = _frequency(rhythmus)
    number = _page_number(seite)
    offset = (number - 1) * PERIODS_PER_PAGE
    summaries = await store.period_summaries(
        session, frequency=frequency, limit=PERIODS_PER_PAGE, offset=offset
    )
    total = await store.count_periods(session, frequency)
    params = {"rhythmus": str(frequency)} if frequency else {}
    href = request.url.path
    return render_console(
        request,
        "deliveries",
        operator,
        section="zustellungen",
        runs=[run_row(summary) for summary in summaries],
        frequencies=FREQUENCY_LABELS,
        chosen=str(frequency or ""),
        total=total,
        pager=_pager(href, params, number, total, PERIODS_PER_PAGE),
    )


@router.get("/zustellungen/{key}", response_class=HTMLResponse, include_in_schema=False)
async def period(
    request: Request, operator: CurrentOperator, session: Session, key: str, seite: str = ""
) -> HTMLResponse:
    """A period's counts and its failed and retrying rows."""
    return await _period_page(request, operator, session, key, seite)


async def _period_page(
    request: Request, operator: store.Operator, session: AsyncSession, key: str, seite: str
) -> HTMLResponse:
    found = await store.period_summaries(session, keys=[key], limit=1)
    if not found:
        return render_console(
            request,
            "message",
            operator,
            status_code=404,
            section="zustellungen",
            heading="Ausgabe nicht gefunden",
            paragraphs=[f"Für {key!r} wurde nichts versandt oder geplant."],
        )
    (summary,) = found
    open_rows = store.DeliveryFilter(period_keys=(key,), states=OPEN_STATES)
    number = _page_number(seite)
    rows = await store.find_deliveries(
        session, open_rows, limit=ROWS_PER_PAGE, offset=(number - 1) * ROWS_PER_PAGE
    )
    total = await store.count_deliveries(session, open_rows)
    return render_console(
        request,
        "deliveries_period",
        operator,
        section="zustellungen",
        run=run_row(summary),
        name=deliveries.period_name(summary.key, summary.end),
        rows=rows,
        total=total,
        state_labels=STATE_LABELS,
        now=store.utcnow(),
        retry_url=console_path(settings_of(request), _period_path(key, "erneut")),
        pager=_pager(request.url.path, {}, number, total, ROWS_PER_PAGE),
    )


@router.post("/zustellungen/{key}/erneut", include_in_schema=False)
async def retry(
    request: Request,
    operator: CurrentOperator,
    form: CheckedForm,
    sessions: Sessions,
    runtime: AppRuntime,
    key: str,
) -> RedirectResponse:
    """Retry one row of the period (`id`: due now if it waits, pending again if it
    failed), or every row of it in a state (`alle`: `retrying` or `failed`)."""
    row, every = form.get("id"), form.get("alle")
    now = store.utcnow()
    async with sessions() as session, session.begin():
        if isinstance(row, str) and row.isdecimal():
            report = await deliveries.retry_deliveries(session, [int(row)], now)
        elif every in deliveries.RETRYABLE_STATES:
            report = await deliveries.retry_period(session, [key], now, str(every))
        else:
            return redirect(request, _period_path(key), flash="Diese Zustellung gibt es nicht.")
    return _after(request, runtime, key, report)


def _after(
    request: Request, runtime: Runtime, key: str, report: deliveries.RetryReport
) -> RedirectResponse:
    """Wake the sending if a row is due now, and go back to the period with what happened."""
    if report.retried or report.already_due:
        runtime.request_digest_retry()
    tick = settings_of(request).digest_retry_seconds
    return redirect(request, _period_path(key), flash=retry_notice(report, tick))


def _rows(count: int, one: str, many: str) -> str:
    return f"1 Zustellung {one}" if count == 1 else f"{count} Zustellungen {many}"


def retry_notice(report: deliveries.RetryReport, tick_seconds: int) -> str:
    """What a retry did, in German: rows made due, rows due already, refusals with their
    reason, and when the sending starts."""
    parts = []
    if report.retried:
        parts.append(_rows(len(report.retried), "wird erneut versucht.", "werden erneut versucht."))
    if report.already_due:
        parts.append(
            _rows(
                len(report.already_due),
                "war schon zum Versand vorgesehen.",
                "waren schon zum Versand vorgesehen.",
            )
        )
    if report.retried or report.already_due:
        parts.append(f"Der Versand beginnt gleich (spätestens {_within(tick_seconds)}).")
    for refusal in report.refused[:_REFUSALS_SHOWN]:
        parts.append(
            f"Nicht erneut versucht: {refusal.email or refusal.delivery_id}: {refusal.german}"
        )
    if len(report.refused) > _REFUSALS_SHOWN:
        parts.append(f"… und {len(report.refused) - _REFUSALS_SHOWN} weitere.")
    return " ".join(parts) or "Keine Zustellung wartet auf einen neuen Versuch."


def _within(seconds: int) -> str:
    if seconds < 120:
        return f"in {seconds} Sekunden"
    return f"in {-(-seconds // 60)} Minuten"

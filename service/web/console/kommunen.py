"""The console's Kommunen list (`/verwaltung/kommunen`): search, add, CSV import and export.

Owns the list of municipalities with their addresses (searched and filtered in the store,
50 rows a page), the form that adds one (validated as `subscribers.SubscriberIn`, German
errors, the address active with an operator consent record, as `subscribers add` on the
command line), the CSV upload with its per-line report and the CSV export in the import's
columns. The pages of one address are in `kommune`. Imports `store`, `subscribers`,
`errors` and the console's `access`, `frame` and `overview`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from service import store, subscribers
from service.errors import PartnerpostError
from service.web.console.access import CheckedForm, CurrentOperator
from service.web.console.frame import redirect, render_console
from service.web.console.overview import FREQUENCY_LABELS
from service.web.dependencies import Session, Sessions

router = APIRouter()

PAGE_SIZE = 50
STATUS_LABELS = {
    store.AddressStatus.ACTIVE: "aktiv",
    store.AddressStatus.PENDING: "unbestätigt",
    store.AddressStatus.PAUSED: "pausiert",
    store.AddressStatus.UNSUBSCRIBED: "abgemeldet",
    store.AddressStatus.BOUNCED: "gesperrt (Bounce)",
}
FIELDS = ("name", "email", "ags", "bundesland", "partner", "frequency", "topics")
# A spreadsheet runs a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def choices() -> dict[str, Any]:
    """The options of the forms' select fields."""
    return {
        "bundeslaender": sorted(subscribers.BUNDESLAENDER.values()),
        "frequencies": {str(value): label for value, label in FREQUENCY_LABELS.items()},
        "statuses": {str(value): label for value, label in STATUS_LABELS.items()},
    }


def split_topics(value: str) -> list[str]:
    return [t.strip() for t in value.replace(",", ";").split(";") if t.strip()]


def form_values(form: FormData) -> dict[str, str]:
    """The municipality form's fields as entered (to validate, and to show again)."""
    return {name: str(form.get(name) or "").strip() for name in FIELDS}


def validated(values: dict[str, str]) -> tuple[subscribers.SubscriberIn | None, list[str]]:
    """The form as a `SubscriberIn`, or None with what is wrong, in German."""
    raw: dict[str, Any] = {**values, "topics": split_topics(values["topics"])}
    try:
        return subscribers.SubscriberIn.model_validate(raw), []
    except ValidationError as exc:
        return None, [subscribers.german_error(error) for error in exc.errors()]


def form_page(
    request: Request,
    operator: store.Operator,
    values: dict[str, str],
    errors: list[str],
    address: store.Address | None = None,
) -> HTMLResponse:
    """The add form, or the edit form of `address`, with the values entered and, if any,
    why they were refused."""
    return render_console(
        request,
        "kommunen_form",
        operator,
        status_code=422 if errors else 200,
        values=values,
        errors=errors,
        adding=address is None,
        address=address,
        **choices(),
    )


@dataclass(frozen=True)
class Row:
    subscriber: store.Subscriber
    address: store.Address | None
    status: str


def _search(request: Request) -> store.SubscriberSearch:
    params = request.query_params
    return store.SubscriberSearch(
        text=params.get("q", ""),
        bundesland=params.get("bundesland") or None,
        partner=params.get("partner", ""),
        frequency=params.get("rhythmus") or None,
        status=params.get("status") or None,
    )


def _page_number(request: Request) -> int:
    raw = request.query_params.get("seite", "1")
    return max(int(raw), 1) if raw.isdigit() else 1


@router.get("/kommunen", response_class=HTMLResponse, include_in_schema=False)
async def municipalities(
    request: Request, operator: CurrentOperator, session: Session
) -> HTMLResponse:
    search = _search(request)
    page = _page_number(request)
    total, found = await store.search_addresses(
        session, search, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    query = {k: v for k, v in request.query_params.items() if k != "seite" and v}

    def page_url(number: int) -> str:
        return "?" + urlencode({**query, "seite": number})

    rows = [
        Row(s, a, STATUS_LABELS.get(store.AddressStatus(a.status), a.status) if a else "–")
        for s, a in found
    ]
    paging: dict[str, Any] = {"page": page, "pages": pages, "url": page_url}
    context: dict[str, Any] = {"rows": rows, "total": total, "paging": paging, "query": query}
    return render_console(
        request, "kommunen", operator, export_query=urlencode(query), **context, **choices()
    )


@router.get("/kommunen/neu", response_class=HTMLResponse, include_in_schema=False)
async def add_form(request: Request, operator: CurrentOperator) -> HTMLResponse:
    values = dict.fromkeys(FIELDS, "") | {"frequency": str(store.Frequency.WEEKLY)}
    return form_page(request, operator, values, [])


@router.post("/kommunen/neu", response_class=HTMLResponse, include_in_schema=False)
async def add(
    request: Request, operator: CurrentOperator, form: CheckedForm, sessions: Sessions
) -> Response:
    values = form_values(form)
    data, errors = validated(values)
    if data is None:
        return form_page(request, operator, values, errors)
    async with sessions() as session:
        known = await store.address_by_email(session, data.email)
    if known is not None:
        errors = [f"E-Mail-Adresse: {data.email} ist schon eingetragen ({known.subscriber.name})"]
        return form_page(request, operator, values, errors)
    added = await subscribers.import_rows(sessions, [data], store.utcnow())
    if not added.added:  # it was added meanwhile, or unsubscribed itself in between
        errors = [f"E-Mail-Adresse: {data.email} ist schon eingetragen"]
        return form_page(request, operator, values, errors)
    return redirect(request, "kommunen", flash=f"{data.email} für {data.name} eingetragen.")


@router.get("/kommunen/import", response_class=HTMLResponse, include_in_schema=False)
async def import_form(request: Request, operator: CurrentOperator) -> HTMLResponse:
    return render_console(request, "kommunen_import", operator, report=None, error=None)


@router.post("/kommunen/import", response_class=HTMLResponse, include_in_schema=False)
async def import_upload(
    request: Request, operator: CurrentOperator, form: CheckedForm, sessions: Sessions
) -> HTMLResponse:
    upload = form.get("datei")
    if not isinstance(upload, UploadFile) or not upload.filename:
        error = "Bitte eine CSV-Datei auswählen."
        return render_console(
            request, "kommunen_import", operator, status_code=422, report=None, error=error
        )
    name = upload.filename
    try:
        text, _ = subscribers.decode_csv(await upload.read(), name)
        report = await subscribers.import_csv(sessions, text, store.utcnow(), name)
    except PartnerpostError as exc:
        return render_console(
            request, "kommunen_import", operator, status_code=422, report=None, error=str(exc)
        )
    return render_console(
        request, "kommunen_import", operator, report=report, error=None, filename=name
    )


def neutralised(cell: str) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula."""
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell


def export_csv(found: list[tuple[store.Subscriber, store.Address | None]]) -> str:
    """The rows in the import's columns, one line per address."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(subscribers.CSV_COLUMNS)
    for subscriber, address in found:
        if address is None:
            continue
        cells = (
            subscriber.name,
            address.email,
            subscriber.ags or "",
            subscriber.bundesland or "",
            subscriber.partner or "",
            subscriber.frequency,
            ";".join(subscriber.topics),
        )
        writer.writerow([neutralised(cell) for cell in cells])
    return buffer.getvalue()


@router.get("/kommunen/export.csv", include_in_schema=False)
async def export(request: Request, operator: CurrentOperator, session: Session) -> Response:
    _, found = await store.search_addresses(session, _search(request), limit=None)
    filename = f"kommunen-{store.utcnow():%Y-%m-%d}.csv"
    return Response(
        export_csv(found).encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )

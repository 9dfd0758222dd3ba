"""The console's pages of one address (`/verwaltung/kommunen/adresse/<id>`).

Owns the address's page (its municipality, its consent records and its delivery history:
period, status, attempts, last SMTP reply, when), the edit form (the municipality's name,
AGS, Bundesland, partner, frequency and topics, and the address; validated as
`subscribers.SubscriberIn`), pausing and resuming the address, and removing it after a
confirmation page (the municipality goes with its last address). Imports `store`,
`digest`, `subscribers` and the console's `access`, `frame` and `kommunen`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from service import digest, store, subscribers
from service.web.console.access import CheckedForm, CurrentOperator
from service.web.console.frame import redirect, render_console
from service.web.console.kommunen import (
    STATUS_LABELS,
    choices,
    form_page,
    form_values,
    validated,
)
from service.web.dependencies import Session, Sessions

router = APIRouter()

PATH = "/kommunen/adresse/{address_id}"
DELIVERY_LABELS = {
    store.DeliveryStatus.PENDING: "ausstehend / erneuter Versuch",
    store.DeliveryStatus.SENDING: "wird gesendet",
    store.DeliveryStatus.SENT: "versendet",
    store.DeliveryStatus.FAILED: "fehlgeschlagen",
    store.DeliveryStatus.EMPTY: "übersprungen (nichts Neues)",
    store.DeliveryStatus.SUPERSEDED: "übersprungen (in späterer Ausgabe)",
    store.DeliveryStatus.UNCERTAIN: "unsicher",
}
CONSENT_SOURCES = {"form": "Formular", "api": "Schnittstelle", "operator": "Verwaltung"}


@dataclass(frozen=True)
class HistoryRow:
    period: str
    status: str
    attempts: int
    last_reply: str | None
    at: datetime


async def _address(session: AsyncSession, address_id: int) -> store.Address:
    address = await store.address_by_id(session, address_id)
    if address is None:
        raise HTTPException(404, "Diese Adresse gibt es nicht (mehr).")
    return address


async def _is_last(session: AsyncSession, address: store.Address) -> bool:
    """Whether the address is its municipality's only one."""
    await session.refresh(address.subscriber, ["addresses"])
    return len(address.subscriber.addresses) == 1


def _history(deliveries: list[store.Delivery]) -> list[HistoryRow]:
    return [
        HistoryRow(
            period=digest.period_label(store.Period.of(d)),
            status=DELIVERY_LABELS.get(store.DeliveryStatus(d.status), d.status),
            attempts=d.attempts,
            last_reply=d.last_reply,
            at=d.sent_at or d.created_at,
        )
        for d in reversed(deliveries)
    ]


@router.get(PATH, response_class=HTMLResponse, include_in_schema=False)
async def address_page(
    request: Request, operator: CurrentOperator, session: Session, address_id: int
) -> HTMLResponse:
    address = await _address(session, address_id)
    deliveries = list(await store.deliveries_of(session, address.id))
    return render_console(
        request,
        "kommunen_adresse",
        operator,
        address=address,
        subscriber=address.subscriber,
        status=STATUS_LABELS.get(store.AddressStatus(address.status), address.status),
        consents=await store.consents_of(session, address.id),
        consent_sources=CONSENT_SOURCES,
        history=_history(deliveries),
        **choices(),
    )


def _values(address: store.Address) -> dict[str, str]:
    subscriber = address.subscriber
    return {
        "name": subscriber.name,
        "email": address.email,
        "ags": subscriber.ags or "",
        "bundesland": subscriber.bundesland or "",
        "partner": subscriber.partner or "",
        "frequency": subscriber.frequency,
        "topics": "; ".join(subscriber.topics),
    }


@router.get(f"{PATH}/bearbeiten", response_class=HTMLResponse, include_in_schema=False)
async def edit_form(
    request: Request, operator: CurrentOperator, session: Session, address_id: int
) -> HTMLResponse:
    address = await _address(session, address_id)
    return form_page(request, operator, _values(address), [], address=address)


async def _conflicts(
    session: AsyncSession, address: store.Address, data: subscribers.SubscriberIn
) -> list[str]:
    """What the edit would clash with: another address or municipality of that name."""
    errors = []
    other = await store.address_by_email(session, data.email)
    if other is not None and other.id != address.id:
        errors.append(f"E-Mail-Adresse: {data.email} gehört schon zu {other.subscriber.name}")
    namesake = await store.subscriber_by_name(session, data.name)
    if namesake is not None and namesake.id != address.subscriber_id:
        errors.append(f"Kommune: {data.name} ist schon eingetragen")
    return errors


@router.post(f"{PATH}/bearbeiten", response_class=HTMLResponse, include_in_schema=False)
async def edit(
    request: Request,
    operator: CurrentOperator,
    form: CheckedForm,
    sessions: Sessions,
    address_id: int,
) -> Response:
    values = form_values(form)
    data, errors = validated(values)
    async with sessions() as session, session.begin():
        address = await _address(session, address_id)
        if data is not None:
            errors = await _conflicts(session, address, data)
        if data is None or errors:
            return form_page(request, operator, values, errors, address=address)
        subscriber = address.subscriber
        subscriber.name, subscriber.ags, subscriber.partner = data.name, data.ags, data.partner
        subscriber.bundesland = data.land()
        subscriber.frequency = str(data.frequency)
        subscriber.topics = list(data.topics)
        address.email = data.email.lower()
    return redirect(request, f"kommunen/adresse/{address_id}", flash="Gespeichert.")


@router.post(f"{PATH}/status", include_in_schema=False)
async def pause_or_resume(
    address_id: int, request: Request, _: CurrentOperator, form: CheckedForm, sessions: Sessions
) -> Response:
    """Pause the address (`aktion=pausieren`) or resume it (`aktion=fortsetzen`)."""
    pausing = form.get("aktion") == "pausieren"
    async with sessions() as session, session.begin():
        address = await _address(session, address_id)
        done = store.pause(address) if pausing else store.resume(address)
    if pausing:
        flash = "Pausiert: keine Ausgaben bis zum Fortsetzen." if done else "Nicht pausierbar."
    else:
        flash = "Fortgesetzt: die Adresse ist wieder aktiv." if done else "War nicht pausiert."
    return redirect(request, f"kommunen/adresse/{address_id}", flash=flash)


@router.get(f"{PATH}/entfernen", response_class=HTMLResponse, include_in_schema=False)
async def remove_form(
    request: Request, operator: CurrentOperator, session: Session, address_id: int
) -> HTMLResponse:
    address = await _address(session, address_id)
    return render_console(
        request,
        "kommunen_entfernen",
        operator,
        address=address,
        subscriber=address.subscriber,
        last=await _is_last(session, address),
    )


@router.post(f"{PATH}/entfernen", include_in_schema=False)
async def remove(
    request: Request, _: CurrentOperator, form: CheckedForm, sessions: Sessions, address_id: int
) -> Response:
    async with sessions() as session, session.begin():
        address = await _address(session, address_id)
        subscriber = address.subscriber
        if await _is_last(session, address):
            await store.remove_subscriber(session, subscriber)
            flash = f"{subscriber.name} mit {address.email} entfernt."
        else:
            await session.delete(address)
            flash = f"{address.email} entfernt."
    return redirect(request, "kommunen", flash=flash)

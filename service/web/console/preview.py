"""The console's Vorschau (`/verwaltung/vorschau`): a municipality's next digest, and a test send.

Owns the preview page (choose a municipality, see the digest its first active address
gets at the end of the current period, HTML in a sandboxed frame and the text part) and
"Testversand an mich": that digest to the signed-in operator's address through the
runtime's transport, the subject marked "[Test] ", recorded nowhere (no ledger row, no
mark moves). Imports `store`, `digest`, `mailer`, `web.dependencies` and the console's
`access` and `frame`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import digest, mailer, store
from service.config import Settings
from service.web.console.access import CheckedForm, CurrentOperator
from service.web.console.frame import redirect, render_console, settings_of
from service.web.dependencies import AppRuntime, Session, Sessions

router = APIRouter()

TEST_PREFIX = "[Test] "
# The municipalities the choice lists at most (all 11,000 made a page of about 1 MB).
CHOICES = 200


@dataclass(frozen=True)
class Preview:
    """The next digest of one municipality, as its address `email` would get it."""

    subscriber: store.Subscriber
    email: str | None  # None: the municipality has no address to preview for
    label: str  # the period it ends
    rendered: digest.RenderedDigest | None  # None: nothing new, no digest goes out


def _preview_address(subscriber: store.Subscriber) -> store.Address | None:
    """The address whose digest is shown: the first active one, else the first one."""
    active = [a for a in subscriber.addresses if a.status == store.AddressStatus.ACTIVE]
    candidates = active or list(subscriber.addresses)
    return candidates[0] if candidates else None


async def _preview(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], subscriber_id: int
) -> Preview | None:
    async with sessions() as session:
        subscriber = await session.get(store.Subscriber, subscriber_id)
    if subscriber is None:
        return None
    frequency = store.Frequency(subscriber.frequency)
    at = digest.next_period_end(settings, frequency, store.utcnow())
    label = digest.period_label(digest.latest_period(settings, frequency, at))
    address = _preview_address(subscriber)
    if address is None:
        return Preview(subscriber, None, label, None)
    found = await digest.preview(settings, sessions, address.email, at)
    if found is None:
        return Preview(subscriber, address.email, label, None)
    # An operator who follows "Abmelden" in a preview or test mail must not unsubscribe
    # the municipality: its links lead back here.
    here = settings.link(f"verwaltung/vorschau?{urlencode({'kommune': subscriber.id})}")
    return Preview(subscriber, address.email, label, found[0].with_links_to(here))


def _test_envelope(
    settings: Settings, rendered: digest.RenderedDigest, operator: store.Operator
) -> mailer.Envelope:
    now = store.utcnow()
    message_id = mailer.message_id(settings, f"test.{operator.id}.{now.strftime('%Y%m%d%H%M%S%f')}")
    message = mailer.compose(
        settings,
        to_name="",
        to_address=operator.email,
        subject=TEST_PREFIX + rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message_id,
        date=now,
    )
    return mailer.envelope(settings, message, operator.email, message_id)


@router.get("/vorschau", response_class=HTMLResponse, include_in_schema=False)
async def preview_page(
    request: Request,
    operator: CurrentOperator,
    session: Session,
    sessions: Sessions,
    kommune: int | None = None,
    suche: str = "",
) -> HTMLResponse:
    wanted = suche.strip().casefold()
    matching = [
        (id_, name)
        for id_, name in await store.subscriber_names(session)
        if not wanted or wanted in name.casefold()
    ]
    municipalities = matching[:CHOICES]
    shown = None
    if kommune is not None:
        shown = await _preview(settings_of(request), sessions, kommune)
    if shown is not None and all(id_ != kommune for id_, _ in municipalities):
        municipalities.insert(0, (shown.subscriber.id, shown.subscriber.name))
    return render_console(
        request,
        "vorschau",
        operator,
        status_code=404 if kommune is not None and shown is None else 200,
        municipalities=municipalities,
        matching=len(matching),
        choices=CHOICES,
        suche=suche,
        kommune=kommune,
        preview=shown,
    )


@router.post("/vorschau/testversand", response_class=HTMLResponse, include_in_schema=False)
async def test_send(
    request: Request,
    operator: CurrentOperator,
    form: CheckedForm,
    sessions: Sessions,
    runtime: AppRuntime,
) -> Response:
    chosen = str(form.get("kommune") or "")
    shown = (
        await _preview(settings_of(request), sessions, int(chosen)) if chosen.isdigit() else None
    )
    back = urlencode({"kommune": chosen}) if shown else ""
    if shown is None or shown.rendered is None:
        flash = "Es gibt keine Ausgabe, die sich senden ließe."
        return redirect(request, "vorschau", flash=flash, query=back)
    try:
        await runtime.transport.send(_test_envelope(settings_of(request), shown.rendered, operator))
    except mailer.SendError as exc:
        return redirect(request, "vorschau", flash=f"Testversand fehlgeschlagen: {exc}", query=back)
    flash = f"Testversand an {operator.email} verschickt."
    return redirect(request, "vorschau", flash=flash, query=back)

"""Subscriptions: the form and public API to subscribe, and the links in the mails.

Owns `/abonnieren` (form), `/api/abonnements` (API), and the pages behind the
confirmation, unsubscribe and preferences links. A link's GET only shows a page with a
button; the button's POST (or an RFC 8058 one-click POST to the unsubscribe link) changes
something, so a link scanner that opens every link confirms and cancels nothing. An
invalid or expired link gets one German page (`invalid_link`). Imports `store`,
`subscribers`, `consent` and the web package's `dependencies` and `rendering`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import consent, store, subscribers
from service.config import Settings
from service.runtime import Runtime
from service.web.dependencies import (
    AppRuntime,
    AppSettings,
    ConfirmAddress,
    PageView,
    PreferencesAddress,
    Sessions,
    Tokens,
    UnsubscribeAddress,
    token_address,
)
from service.web.rendering import PageRenderer, View

router = APIRouter()

FREQUENCIES = [("daily", "täglich"), ("weekly", "wöchentlich"), ("monthly", "monatlich")]
CHECK_MAIL = (
    "Bitte prüfen Sie Ihr Postfach",
    "Falls die Adresse noch nicht bestätigt ist, haben wir eine E-Mail mit einem "
    "Bestätigungslink geschickt. Erst nach der Bestätigung erhalten Sie den Newsletter.",
)
TOO_MANY = (
    "Zu viele Anfragen",
    "Von Ihrem Anschluss kamen in der letzten Stunde zu viele Anmeldungen. "
    "Bitte versuchen Sie es später noch einmal.",
)
INVALID_LINK = (
    "Dieser Link ist ungültig oder abgelaufen",
    "Bitte verwenden Sie den Link aus der neuesten E-Mail oder melden Sie sich erneut an.",
)


async def invalid_link(request: Request, exc: Exception) -> Response:
    """The app's answer to `subscribers.InvalidTokenError`, wherever a route raised it."""
    renderer: PageRenderer = request.app.state.renderer
    async with request.app.state.sessions() as session:
        return await View(renderer, session).message(*INVALID_LINK, code=400)


def _client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --- subscribing --------------------------------------------------------------------------


async def _subscribe_form(
    view: View, settings: Settings, form: dict[str, Any], errors: list[str], code: int = 200
) -> HTMLResponse:
    return await view.page(
        "subscribe",
        code=code,
        form=form,
        errors=errors,
        action=settings.link("abonnieren"),
        frequencies=FREQUENCIES,
        bundeslaender=sorted(subscribers.BUNDESLAENDER.values()),
        topics=await store.all_topics(view.session),
        notice=consent.FORM_NOTICE,
    )


async def _subscribe(
    request: Request,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    runtime: Runtime,
    data: subscribers.SubscriberIn,
    source: str = consent.Source.FORM,
) -> None:
    await subscribers.request_subscription(
        settings,
        sessions,
        data,
        _client_of(request),
        store.utcnow(),
        source=source,
    )
    # Whether or not a mail was queued, so the answer takes as long either way.
    runtime.confirmations.wake()


@router.get("/abonnieren", response_class=HTMLResponse, include_in_schema=False)
async def subscribe_page(view: PageView, settings: AppSettings) -> HTMLResponse:
    return await _subscribe_form(view, settings, {}, [])


@router.post("/abonnieren", response_class=HTMLResponse, include_in_schema=False)
async def subscribe_post(
    request: Request,
    view: PageView,
    settings: AppSettings,
    sessions: Sessions,
    runtime: AppRuntime,
) -> HTMLResponse:
    form = await request.form()
    raw: dict[str, Any] = {k: v for k, v in form.items() if k != "topics"}
    raw["topics"] = form.getlist("topics")
    try:
        data = subscribers.SubscriberIn.model_validate(raw)
    except ValidationError as exc:
        errors = [subscribers.german_error(e) for e in exc.errors()]
        return await _subscribe_form(view, settings, raw, errors, code=422)
    try:
        await _subscribe(request, settings, sessions, runtime, data)
    except subscribers.RateLimitedError:
        return await view.message(*TOO_MANY, code=429)
    return await view.message(*CHECK_MAIL)


@router.post("/api/abonnements", status_code=202, tags=["subscriptions"])
async def subscribe_api(
    request: Request,
    data: subscribers.SubscriberIn,
    settings: AppSettings,
    sessions: Sessions,
    runtime: AppRuntime,
) -> dict[str, str]:
    """Start double opt-in; the answer is the same whether the address is known or not."""
    try:
        await _subscribe(request, settings, sessions, runtime, data, consent.Source.API)
    except subscribers.RateLimitedError as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, TOO_MANY[1]) from exc
    return {"status": "pending", "detail": CHECK_MAIL[1]}


# --- the links in the mails ---------------------------------------------------------------


@router.get("/bestaetigen/{token}", response_class=HTMLResponse, include_in_schema=False)
async def confirm_page(
    token: str, address: ConfirmAddress, view: PageView, settings: AppSettings
) -> HTMLResponse:
    """Only shows a button: link scanners that open every link confirm nothing."""
    return await view.page("confirm", address=address, action=settings.link(f"bestaetigen/{token}"))


@router.post("/bestaetigen/{token}", response_class=HTMLResponse, include_in_schema=False)
async def confirm(
    token: str, request: Request, view: PageView, settings: AppSettings, sessions: Sessions
) -> HTMLResponse:
    address = await subscribers.confirm(
        settings, sessions, token, _client_of(request), store.utcnow()
    )
    return await view.message(
        "Abonnement bestätigt",
        f"{address.email} erhält ab jetzt den Newsletter für {address.subscriber.name}.",
    )


@router.get("/abmelden/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe_page(
    token: str, address: UnsubscribeAddress, view: PageView, settings: AppSettings, tokens: Tokens
) -> HTMLResponse:
    return await view.page(
        "unsubscribe",
        address=address,
        action=settings.link(f"abmelden/{token}"),
        preferences_url=tokens.preferences_url(address),
    )


@router.post("/abmelden/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe(
    token: str, view: PageView, settings: AppSettings, sessions: Sessions
) -> HTMLResponse:
    """The page's button and RFC 8058 one-click (List-Unsubscribe=One-Click) alike."""
    address = await subscribers.unsubscribe(settings, sessions, token, store.utcnow())
    return await view.message(
        "Sie sind abgemeldet",
        f"{address.email} erhält keinen Newsletter mehr für {address.subscriber.name}.",
    )


async def _preferences_page(
    view: View,
    settings: Settings,
    tokens: subscribers.Tokens,
    address: store.Address,
    token: str,
    saved: bool = False,
) -> HTMLResponse:
    return await view.page(
        "preferences",
        subscriber=address.subscriber,
        saved=saved,
        action=settings.link(f"einstellungen/{token}"),
        unsubscribe_url=tokens.unsubscribe_url(address),
        frequencies=FREQUENCIES,
        topics=await store.all_topics(view.session),
    )


@router.get("/einstellungen/{token}", response_class=HTMLResponse, include_in_schema=False)
async def preferences(
    token: str, address: PreferencesAddress, view: PageView, settings: AppSettings, tokens: Tokens
) -> HTMLResponse:
    return await _preferences_page(view, settings, tokens, address, token)


@router.post("/einstellungen/{token}", response_class=HTMLResponse, include_in_schema=False)
async def save_preferences(
    token: str,
    request: Request,
    view: PageView,
    settings: AppSettings,
    sessions: Sessions,
    tokens: Tokens,
) -> HTMLResponse:
    """Save the choice, then show it; an invalid choice shows the page as stored."""
    form = await request.form()
    try:
        choice = subscribers.PreferencesIn(
            frequency=form.get("frequency"), topics=form.getlist("topics")
        )
    except ValidationError:
        saved = False
    else:
        await subscribers.update_preferences(settings, sessions, token, choice)
        saved = True
    # Read after the change committed, in this request's (so far unused) session.
    address = await token_address(request, view.session, "preferences", token)
    return await _preferences_page(view, settings, tokens, address, token, saved=saved)

"""Who may use the console, and what every console response carries.

Owns the dependencies a console route declares: `CurrentOperator` (the signed-in
operator; otherwise a 303 to the sign-in page) and `CheckedForm` (the POSTed form, after
its CSRF token was checked against the session; a missing or wrong token gets a 403
page). Also the security headers on every response below the console (no caching, no
framing, no referrer to other sites) and `install`, which sets all this up on an app.
Imports `store`, `config` and the console's `cookies` and `frame`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import store
from service.config import Settings
from service.web.console.cookies import PREFIX, Cookies, console_path
from service.web.console.frame import cookies_of, render_console, session_of, settings_of

SECURITY_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "content-security-policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
}


class SignInRequiredError(Exception):
    """Raised by `CurrentOperator`; answered with a 303 to the sign-in page."""

    def __init__(self, back_to: str | None) -> None:
        self.back_to = back_to
        super().__init__("sign-in required")


class CsrfRejectedError(Exception):
    """Raised by `CheckedForm`; answered with a 403 page."""


async def _current_operator(request: Request) -> store.Operator:
    session = session_of(request)
    back_to = request.url.path if request.method == "GET" else None
    if request.method == "GET" and request.url.query:
        back_to = f"{back_to}?{request.url.query}"
    if session is None or session.operator_id is None:
        raise SignInRequiredError(back_to)
    async with request.app.state.sessions() as db:
        operator = await store.operator_by_id(db, session.operator_id)
    if operator is None or not session.belongs_to(operator):
        raise SignInRequiredError(back_to)
    return operator


async def _checked_form(request: Request) -> AsyncIterator[FormData]:
    form = await request.form()
    try:
        if not cookies_of(request).csrf_matches(session_of(request), form.get("csrf")):
            raise CsrfRejectedError()
        yield form
    finally:
        await form.close()  # its uploads' temporary files


# The signed-in operator; a request without a valid session is sent to the sign-in page.
CurrentOperator = Annotated[store.Operator, Depends(_current_operator)]
# The POSTed form, its CSRF token checked (every console form carries `csrf_field()`).
CheckedForm = Annotated[FormData, Depends(_checked_form)]


def sign_in_url(settings: Settings, back_to: str | None = None) -> str:
    url = console_path(settings, "anmelden")
    return f"{url}?weiter={quote(back_to, safe='')}" if back_to else url


def safe_back_to(settings: Settings, back_to: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    home = console_path(settings)
    if not back_to or not back_to.startswith(home) or "//" in back_to or "\\" in back_to:
        return home
    return back_to


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequiredError)
    return RedirectResponse(sign_in_url(settings_of(request), exc.back_to), status_code=303)


async def _csrf_rejected(request: Request, exc: Exception) -> Response:
    return render_console(
        request,
        "message",
        None,
        status_code=403,
        heading="Formular abgelaufen",
        paragraphs=[
            "Das Formular war nicht mehr gültig (etwa weil Sie sich inzwischen ab- und "
            "wieder angemeldet haben). Bitte laden Sie die Seite neu und versuchen Sie "
            "es noch einmal."
        ],
    )


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every response below the console's path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(f"{PREFIX}/"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI, settings: Settings) -> None:
    """Set the console up on a new app: its cookies, error answers and headers."""
    app.state.console_cookies = Cookies(settings)
    app.add_exception_handler(SignInRequiredError, _sign_in_required)
    app.add_exception_handler(CsrfRejectedError, _csrf_rejected)
    app.add_middleware(SecurityHeaders)

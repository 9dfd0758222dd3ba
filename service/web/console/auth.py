"""Signing in to the console and out of it.

Owns `/verwaltung/anmelden` (the form; its POST checks email and password through
`service.operators`, rate-limited, and starts a new session) and `/verwaltung/abmelden`
(POST: ends every session of the operator). Failures get one generic German message, so
the form does not tell which emails are operators. Imports `store`, `operators` and the
console's `cookies`, `frame` and `access`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from service import operators, store
from service.web.console.access import CheckedForm, CurrentOperator, safe_back_to
from service.web.console.cookies import ConsoleSession
from service.web.console.frame import (
    cookies_of,
    redirect,
    render_console,
    session_of,
    settings_of,
)

router = APIRouter()

WRONG = "E-Mail-Adresse oder Passwort falsch."
LIMITED = (
    "Zu viele fehlgeschlagene Anmeldeversuche. Bitte warten Sie eine Viertelstunde und "
    "versuchen Sie es dann noch einmal."
)


def _sign_in_form(
    request: Request,
    back_to: str | None,
    email: str = "",
    error: str | None = None,
    code: int = 200,
) -> HTMLResponse:
    return render_console(
        request,
        "sign_in",
        None,
        status_code=code,
        email=email,
        error=error,
        back_to=safe_back_to(settings_of(request), back_to),
    )


@router.get("/anmelden", response_class=HTMLResponse, include_in_schema=False)
async def sign_in_page(request: Request, weiter: str | None = None) -> Response:
    session = session_of(request)
    if session is not None and session.operator_id is not None:
        async with request.app.state.sessions() as db:
            operator = await store.operator_by_id(db, session.operator_id)
        if operator is not None and session.belongs_to(operator):
            return RedirectResponse(safe_back_to(settings_of(request), weiter), status_code=303)
    return _sign_in_form(request, weiter)


@router.post("/anmelden", response_class=HTMLResponse, include_in_schema=False)
async def sign_in(request: Request, form: CheckedForm) -> Response:
    email = str(form.get("email") or "")
    password = str(form.get("password") or "")
    back_to = str(form.get("weiter") or "") or None
    client = request.client.host if request.client else "unknown"
    try:
        operator = await operators.sign_in(
            settings_of(request),
            request.app.state.sessions,
            email,
            password,
            client,
            store.utcnow(),
        )
    except operators.SignInLimitedError as exc:
        response = _sign_in_form(request, back_to, email, LIMITED, code=429)
        response.headers["Retry-After"] = str(int(exc.window.total_seconds()))
        return response
    except operators.SignInFailedError:
        return _sign_in_form(request, back_to, email, WRONG, code=403)
    target = safe_back_to(settings_of(request), back_to)
    signed_in = RedirectResponse(target, status_code=303)
    cookies_of(request).set_session(signed_in, ConsoleSession.of(operator))
    return signed_in


@router.post("/abmelden", include_in_schema=False)
async def sign_out(request: Request, operator: CurrentOperator, form: CheckedForm) -> Response:
    async with request.app.state.sessions() as db, db.begin():
        current = await store.operator_by_id(db, operator.id)
        if current is not None:
            store.end_sessions(current)
    response = redirect(request, "anmelden", flash="Sie haben sich abgemeldet.")
    cookies_of(request).end_session(response)
    return response

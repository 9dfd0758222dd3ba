"""The console's page frame: one call renders a console page with what every page needs.

Owns `render_console` (the template under `templates/console/`, with the navigation, the
signed-in operator, the CSRF field for forms and the notice a redirect left), `redirect`
(303 after a form, optionally with such a notice) and the navigation itself. Imports
`config`, `store`, `templating` and `web.console.cookies`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup, escape

from service import store, templating
from service.config import Settings
from service.web.console.cookies import FLASH_COOKIE, ConsoleSession, Cookies, console_path


@dataclass(frozen=True)
class NavItem:
    section: str
    label: str
    path: str  # below the console


NAV = (
    NavItem("uebersicht", "Übersicht", ""),
    NavItem("kommunen", "Kommunen", "kommunen"),
    NavItem("zustellungen", "Zustellungen", "zustellungen"),
    NavItem("beitraege", "Beiträge", "beitraege"),
    NavItem("vorschau", "Vorschau", "vorschau"),
)
_SECTIONS = {item.section for item in NAV}


def settings_of(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def cookies_of(request: Request) -> Cookies:
    return cast(Cookies, request.app.state.console_cookies)


def session_of(request: Request) -> ConsoleSession | None:
    """The request's valid session cookie, read once per request."""
    if not hasattr(request.state, "console_session"):
        request.state.console_session = cookies_of(request).read_session(request)
    session: ConsoleSession | None = request.state.console_session
    return session


def render_console(
    request: Request,
    template: str,
    operator: store.Operator | None,
    *,
    status_code: int = 200,
    section: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """`templates/console/<template>.html.j2` with `context`, in the console's frame.

    The template gets, besides `context`: `operator` (None on the sign-in page), `nav`
    (items with `label`, `href`, `current`), `csrf_token` and `csrf_field()` (the hidden
    input every POST form carries), `flash` (a notice from `redirect`, or None),
    `console_url(path)` and `sign_out_url`. `section` marks the navigation item (default:
    the template name's part before `_`, when that is a section).
    """
    settings = settings_of(request)
    cookies = cookies_of(request)
    session = session_of(request)
    fresh = session is None
    if session is None:  # a visitor without a session: one for the sign-in form's token
        session = ConsoleSession.anonymous()
        request.state.console_session = session
    token = cookies.csrf_token(session)
    current = section or template.partition("_")[0]
    if current not in _SECTIONS:
        current = ""

    def console_url(path: str = "") -> str:
        return console_path(settings, path)

    flash = cookies.read_flash(request)
    nav = [
        {"label": item.label, "href": console_url(item.path), "current": item.section == current}
        for item in NAV
    ]
    body = (
        templating.environment()
        .get_template(f"console/{template}.html.j2")
        .render(
            operator=operator,
            nav=nav,
            csrf_token=token,
            csrf_field=lambda: Markup('<input type="hidden" name="csrf" value="{}">').format(
                escape(token)
            ),
            flash=flash,
            console_url=console_url,
            sign_out_url=console_url("abmelden"),
            site_title=settings.site_title or "partnerpost",
            **context,
        )
    )
    response = HTMLResponse(body, status_code=status_code)
    if request.cookies.get(FLASH_COOKIE):
        cookies.clear_flash(response)
    if fresh:
        cookies.set_session(response, session)
    return response


def redirect(
    request: Request, path: str = "", flash: str | None = None, query: str = ""
) -> RedirectResponse:
    """303 to the console page at `path` (below the console) with the query string
    `query` (as `urlencode` makes it), leaving `flash` for it."""
    target = console_path(settings_of(request), path)
    response = RedirectResponse(f"{target}?{query}" if query else target, status_code=303)
    if flash:
        cookies_of(request).set_flash(response, flash)
    return response

"""Helpers for the console's tests: a client of the running app, a page's CSRF token, signing in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from service.config import Settings

from .helpers import running_app

# The operator the console tests sign in as.
EMAIL = "redaktion@agentur.example"
PASSWORD = "richtig-langes-passwort"


@asynccontextmanager
async def console_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the real app for `settings`, following no redirects."""
    async with (
        running_app(settings) as url,
        httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=30) as http,
    ):
        yield http


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token of the page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    """Post the sign-in form as a browser would; returns the answer."""
    form = await http.get("/verwaltung/anmelden")
    return await http.post(
        "/verwaltung/anmelden",
        data={"csrf": csrf_of(form), "email": email, "password": password, "weiter": ""},
    )

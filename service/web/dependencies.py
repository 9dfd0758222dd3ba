"""Web dependencies: what a route asks for instead of reaching into the app's state.

Owns how a request gets its database session, the settings, the runtime, the page
renderer and the link tokens; the admin API's bearer-token check; and the resolution of a
confirmation, unsubscribe or preferences link's token to its address. A token that is not
valid raises `subscribers.InvalidTokenError`, which the app answers with one German page
(see `subscriptions.invalid_link`). Imports `config`, `store`, `subscribers`, `runtime` and
`web.rendering`.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import store, subscribers
from service.config import Settings
from service.runtime import Runtime
from service.web.rendering import PageRenderer, View


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _tokens(request: Request) -> subscribers.Tokens:
    tokens: subscribers.Tokens = request.app.state.tokens
    return tokens


# The request's own session, for reads and for rendering its answer.
Session = Annotated[AsyncSession, Depends(_session)]
# The session factory, for a change made in a transaction of its own.
Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
AppSettings = Annotated[Settings, Depends(_settings)]
AppRuntime = Annotated[Runtime, Depends(_runtime)]
Tokens = Annotated[subscribers.Tokens, Depends(_tokens)]


def _view(request: Request, session: Session) -> View:
    renderer: PageRenderer = request.app.state.renderer
    return View(renderer, session)


PageView = Annotated[View, Depends(_view)]

bearer = HTTPBearer(auto_error=False)


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 unless the request carries the configured admin token (with none configured,
    the admin API is off)."""
    expected = request.app.state.settings.admin_token.get_secret_value()
    token = credentials.credentials if credentials else ""
    if not expected or not secrets.compare_digest(token.encode(), expected.encode()):
        detail = (
            "admin API disabled: set PARTNERPOST_ADMIN_TOKEN"
            if not expected
            else "missing or wrong bearer token"
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
        )


LinkPurpose = Literal["confirm", "unsubscribe", "preferences"]


async def token_address(
    request: Request, session: AsyncSession, purpose: LinkPurpose, token: str
) -> store.Address:
    """The address a link's token was made for; changes nothing. Raises
    `subscribers.InvalidTokenError` for a token that is not (or no longer) valid."""
    if purpose == "confirm":
        return await subscribers.pending_confirmation(_settings(request), session, token)
    return await _tokens(request).address(session, purpose, token)


def _address_of(purpose: LinkPurpose) -> Callable[..., Awaitable[store.Address]]:
    async def resolve(token: str, request: Request, session: Session) -> store.Address:
        return await token_address(request, session, purpose, token)

    return resolve


# The address of the `{token}` in the route's path, for the page a link's GET shows.
ConfirmAddress = Annotated[store.Address, Depends(_address_of("confirm"))]
UnsubscribeAddress = Annotated[store.Address, Depends(_address_of("unsubscribe"))]
PreferencesAddress = Annotated[store.Address, Depends(_address_of("preferences"))]

"""Web guards: how the app answers requests its routes cannot or should not see as sent.

Owns the answer to an invalid request body (422 that names the field and the problem but
never echoes the input, German on the public API), the answer to a body over the size
limit (413; the limit itself is FastAPI's `max_body_size`), and HEAD on every GET route
(the same status and headers, no body). Imports `subscribers` for its German messages.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import subscribers

# Paths whose callers are people's browsers and forms, not the agency's tools.
PUBLIC_API = "/api/abonnements"
_MAX_ERRORS = 20
_MAX_TEXT = 200


def _bounded(value: str) -> str:
    """Short, and encodable as UTF-8 (a lone surrogate from a JSON escape is not)."""
    if len(value) > _MAX_TEXT:
        value = value[: _MAX_TEXT - 1] + "…"
    return value.encode("utf-8", "replace").decode("utf-8")


def _location(error: dict[str, Any]) -> list[str | int]:
    # A location may hold a key the client chose (an unknown field), so it is bounded too.
    return [part if isinstance(part, int) else _bounded(str(part)) for part in error["loc"]]


def _german(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "json_invalid":
        return "Die Anfrage ist kein gültiges JSON."
    if kind in {"model_attributes_type", "dict_type"} or error["loc"] == ("body",):
        return "Erwartet wird ein JSON-Objekt mit mindestens den Feldern name und email."
    if kind == "extra_forbidden":
        return f"Unbekanntes Feld {_bounded(str(error['loc'][-1]))!r}."
    field = error["loc"][1:] if error["loc"][:1] == ("body",) else error["loc"]
    return subscribers.german_error({**error, "loc": field})


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 in FastAPI's documented shape (loc, msg, type), without the input it got."""
    assert isinstance(exc, RequestValidationError)
    public = request.url.path.startswith(PUBLIC_API)
    details = [
        {
            "loc": _location(error),
            "msg": _german(error) if public else _bounded(str(error["msg"])),
            "type": _bounded(str(error["type"])),
        }
        for error in exc.errors()[:_MAX_ERRORS]
    ]
    return JSONResponse({"detail": details}, status_code=422)


async def unreadable(request: Request, exc: Exception) -> JSONResponse:
    """400: a body FastAPI could not parse at all (e.g. JSON nested beyond Python's limit)."""
    detail = exc.detail if isinstance(exc, HTTPException) else "bad request"
    headers = exc.headers if isinstance(exc, HTTPException) else None
    if request.url.path.startswith(PUBLIC_API):
        detail = "Die Anfrage ist kein lesbares JSON-Dokument."
    return JSONResponse({"detail": detail}, status_code=400, headers=headers)


async def too_large(request: Request, exc: Exception) -> JSONResponse:
    limit = request.app.state.settings.max_body_bytes
    detail = f"Die Anfrage ist zu groß: höchstens {limit:,} Bytes.".replace(",", ".")
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return JSONResponse({"detail": detail}, status_code=413, headers=headers)


class HeadAsGet:
    """Answers HEAD like GET, without the body: the routes declare GET only, and a HEAD
    from a link checker or a feed reader should not get 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def install(app: FastAPI) -> None:
    """Register the guards on a new app (before it serves its first request)."""
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(400, unreadable)
    app.add_exception_handler(413, too_large)
    app.add_middleware(HeadAsGet)

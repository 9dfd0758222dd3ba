"""The console's cookies: the session, its CSRF token, and the one-time notice (flash).

Owns what the cookies carry and how they are signed. The session cookie is signed with
the secret key under its own salt and carries a random session id (what CSRF tokens are
bound to), the operator's id and a fingerprint of the operator's session key, and its
issue time; it expires after `SESSION_LIFETIME`. A visitor who is not signed in gets a
session without an operator, so the sign-in form has a CSRF token too. HttpOnly,
SameSite=Lax, Path=the console, Secure when the public URL is https. Imports `config`
and `store`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from service import store
from service.config import Settings

PREFIX = "/verwaltung"  # where the app routes the console
SESSION_COOKIE = "pp_verwaltung"
FLASH_COOKIE = "pp_hinweis"
SESSION_LIFETIME = timedelta(hours=12)
_FLASH_LIFETIME = timedelta(minutes=5)


@dataclass(frozen=True)
class ConsoleSession:
    """What a session cookie carries: its id and, once signed in, whose it is."""

    sid: str
    operator_id: int | None = None
    fingerprint: str | None = None

    @classmethod
    def anonymous(cls) -> ConsoleSession:
        return cls(secrets.token_urlsafe(24))

    @classmethod
    def of(cls, operator: store.Operator) -> ConsoleSession:
        """A new session (a new id, so none issued before signing in carries over)."""
        return cls(secrets.token_urlsafe(24), operator.id, fingerprint(operator))

    def belongs_to(self, operator: store.Operator) -> bool:
        """Whether the operator's session key is still the one this session was made with."""
        return self.fingerprint is not None and hmac.compare_digest(
            self.fingerprint, fingerprint(operator)
        )


def fingerprint(operator: store.Operator) -> str:
    return hashlib.sha256(operator.session_key.encode()).hexdigest()[:32]


def console_path(settings: Settings, path: str = "") -> str:
    """The absolute path of a console page as browsers see it (the public URL's path
    prefix included): `console_path(settings, "kommunen")` → `/verwaltung/kommunen`."""
    return urlsplit(settings.link(f"{PREFIX.strip('/')}/{path.lstrip('/')}")).path


class Cookies:
    """Signs, reads and sets the console's cookies for one app's settings."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.secret_key.get_secret_value()
        self._csrf_key = hmac.new(secret.encode(), b"console-csrf", hashlib.sha256).digest()
        self._sessions = URLSafeTimedSerializer(secret, salt="console-session")
        self._flashes = URLSafeTimedSerializer(secret, salt="console-flash")
        self._path = console_path(settings).rstrip("/") or "/"
        self._secure = settings.public_url.startswith("https://")

    def csrf_token(self, session: ConsoleSession) -> str:
        return hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_matches(self, session: ConsoleSession | None, token: object) -> bool:
        if session is None or not isinstance(token, str):
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    def read_session(self, request: Request) -> ConsoleSession | None:
        """The request's valid, unexpired session, or None."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data: Any = self._sessions.loads(raw, max_age=int(SESSION_LIFETIME.total_seconds()))
            sid, operator_id, mark = data["s"], data["o"], data["k"]
        except (BadSignature, KeyError, TypeError):
            return None
        if not isinstance(sid, str) or not isinstance(operator_id, int | None):
            return None
        return ConsoleSession(sid, operator_id, mark if isinstance(mark, str) else None)

    def set_session(self, response: Response, session: ConsoleSession) -> None:
        value = self._sessions.dumps(
            {"s": session.sid, "o": session.operator_id, "k": session.fingerprint}
        )
        self._set(response, SESSION_COOKIE, value, SESSION_LIFETIME)

    def end_session(self, response: Response) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path=self._path, secure=self._secure, httponly=True, samesite="lax"
        )

    def set_flash(self, response: Response, message: str) -> None:
        self._set(response, FLASH_COOKIE, self._flashes.dumps(message), _FLASH_LIFETIME)

    def read_flash(self, request: Request) -> str | None:
        """The notice a redirect left for this page (`clear_flash` removes it)."""
        raw = request.cookies.get(FLASH_COOKIE)
        if not raw:
            return None
        try:
            message = self._flashes.loads(raw, max_age=int(_FLASH_LIFETIME.total_seconds()))
        except BadSignature:
            return None
        return message if isinstance(message, str) else None

    def clear_flash(self, response: Response) -> None:
        response.delete_cookie(
            FLASH_COOKIE, path=self._path, secure=self._secure, httponly=True, samesite="lax"
        )

    def _set(self, response: Response, name: str, value: str, lifetime: timedelta) -> None:
        response.set_cookie(
            name,
            value,
            max_age=int(lifetime.total_seconds()),
            path=self._path,
            secure=self._secure,
            httponly=True,
            samesite="lax",
        )

"""Operator accounts: who may sign in to the console, and how signing in is checked.

Owns the rules around `store.operators`' records: a valid operator email, the password
policy, argon2id hashes (argon2-cffi's `PasswordHasher`; a hash made with older
parameters is replaced at the next sign-in), and the sign-in check with its rate limit
(failures per client and email, and per client, counted in the store so the limit holds
across replicas). Imports `config`, `errors`, `store` and `consent` (keyed hashes).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import consent, store
from service.config import Settings
from service.errors import PartnerpostError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; this bounds the work per attempt


@dataclass(frozen=True)
class SignInLimits:
    """How many failed sign-ins within `window` block further attempts."""

    window: timedelta = timedelta(minutes=15)
    per_account: int = 5  # from one client for one email
    per_client: int = 20  # from one client, whatever the email


LIMITS = SignInLimits()
_hasher = PasswordHasher()
# Verified against when the email is unknown, so that answer takes as long as a wrong
# password for a known one.
_DUMMY_HASH = _hasher.hash("partnerpost dummy password, never used")


class InvalidOperatorError(PartnerpostError, ValueError):
    """An operator's email or password is not acceptable; the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class SignInFailedError(PartnerpostError, PermissionError):
    """Unknown email or wrong password (deliberately not saying which)."""

    def __init__(self) -> None:
        super().__init__("unknown email or wrong password")


class SignInLimitedError(PartnerpostError, PermissionError):
    """Too many failed sign-ins from this client; try again after the window."""

    def __init__(self, window: timedelta) -> None:
        self.window = window
        super().__init__(f"too many failed sign-ins; wait {window} before trying again")


def valid_email(email: str) -> str:
    """The normalized, lower-cased address, or `InvalidOperatorError`."""
    try:
        parts = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidOperatorError("email", f"{email!r} is not a valid address: {exc}") from None
    return parts.normalized.lower()


def check_password(password: str) -> None:
    """`InvalidOperatorError` unless the password is long enough (and not absurdly long)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidOperatorError(
            "password", f"must have at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidOperatorError(
            "password", f"must have at most {MAX_PASSWORD_LENGTH} characters"
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def add(session: AsyncSession, email: str, password: str, now: datetime) -> store.Operator:
    """Validate and add an operator (`InvalidOperatorError`, `store.OperatorExistsError`)."""
    address = valid_email(email)
    check_password(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    return await store.add_operator(session, address, password_hash, now)


@dataclass(frozen=True)
class _Keys:
    client: str
    account: str

    @classmethod
    def of(cls, settings: Settings, client: str, email: str) -> _Keys:
        return cls(
            consent.keyed_hash(settings, "sign-in-client", client),
            consent.keyed_hash(settings, "sign-in-account", f"{client}\0{email.strip().lower()}"),
        )


async def sign_in(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    email: str,
    password: str,
    client: str,
    now: datetime,
    limits: SignInLimits = LIMITS,
) -> store.Operator:
    """The operator whose email and password these are, their sign-in noted.

    Raises `SignInLimitedError` when this client failed too often within the window (the
    password is then not even checked), else `SignInFailedError` for a wrong pair, which
    counts as a failure.
    """
    keys = _Keys.of(settings, client, email)
    since = now - limits.window
    async with sessions() as session:
        by_account = await store.failed_sign_ins(session, since=since, account_key=keys.account)
        by_client = await store.failed_sign_ins(session, since=since, client_key=keys.client)
        operator = await store.operator_by_email(session, email.strip())
    if by_account >= limits.per_account or by_client >= limits.per_client:
        raise SignInLimitedError(limits.window)
    password = password[: MAX_PASSWORD_LENGTH + 1]
    stored = operator.password_hash if operator is not None else _DUMMY_HASH
    matches = await asyncio.to_thread(_verify, stored, password)
    if operator is None or not matches:
        async with sessions() as session, session.begin():
            await store.record_failed_sign_in(
                session, keys.client, keys.account, now, keep_since=now - 2 * limits.window
            )
        raise SignInFailedError()
    async with sessions() as session, session.begin():
        await store.forget_failed_sign_ins(session, keys.account)
        current = await store.operator_by_id(session, operator.id)
        if current is not None:
            current.last_sign_in_at = now
            if _hasher.check_needs_rehash(current.password_hash):
                current.password_hash = await asyncio.to_thread(hash_password, password)
    if current is None:  # removed meanwhile
        raise SignInFailedError()
    return current

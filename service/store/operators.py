"""Operators: the agency's staff who sign in to the console, and failed sign-ins.

Owns the tables `operators` (email, password hash, a session key whose change ends every
session of the operator) and `sign_in_attempts` (failed sign-ins under keyed hashes of the
client and of client and email, so the rate limit holds across replicas and stores no
address in clear). Hashing passwords and deciding limits is `service.operators`' job.
Imports `base` and `errors`. Functions take an `AsyncSession` and leave transaction
boundaries to the caller.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Index, String, Text, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from service.errors import PartnerpostError
from service.store.base import Base, BigId, UTCDateTime


class Operator(Base):
    """Someone who may sign in to the console."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    # Random; sessions carry a fingerprint of it, so renewing it (sign-out, a new
    # password) ends them all. A removed operator's id may be reused on SQLite: the new
    # operator's key differs, so old sessions stay ended.
    session_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SignInAttempt(Base):
    """One failed sign-in, kept for the rate limit's window."""

    __tablename__ = "sign_in_attempts"
    __table_args__ = (
        Index("ix_sign_in_attempts_client", "client_key", "created_at"),
        Index("ix_sign_in_attempts_account", "account_key", "created_at"),
        Index("ix_sign_in_attempts_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_key: Mapped[str] = mapped_column(String(64))  # keyed hash of the client address
    account_key: Mapped[str] = mapped_column(String(64))  # keyed hash of client and email
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OperatorExistsError(PartnerpostError, ValueError):
    """An operator with that email exists already."""

    def __init__(self, email: str) -> None:
        self.email = email
        super().__init__(f"an operator {email!r} exists already")


class OperatorNotFoundError(PartnerpostError, LookupError):
    """No operator has that email."""

    def __init__(self, email: str) -> None:
        self.email = email
        super().__init__(f"no operator {email!r}; `partnerpost operators list` shows them")


def new_session_key() -> str:
    return secrets.token_hex(32)


async def add_operator(
    session: AsyncSession, email: str, password_hash: str, now: datetime
) -> Operator:
    """A new operator; `OperatorExistsError` when the (lower-cased) email is taken."""
    email = email.lower()
    if await operator_by_email(session, email) is not None:
        raise OperatorExistsError(email)
    operator = Operator(
        email=email, password_hash=password_hash, session_key=new_session_key(), created_at=now
    )
    session.add(operator)
    await session.flush()
    return operator


async def operator_by_email(session: AsyncSession, email: str) -> Operator | None:
    return await session.scalar(select(Operator).where(Operator.email == email.lower()))


async def operator_by_id(session: AsyncSession, operator_id: int) -> Operator | None:
    return await session.get(Operator, operator_id)


async def all_operators(session: AsyncSession) -> Sequence[Operator]:
    return (await session.scalars(select(Operator).order_by(Operator.email))).all()


async def remove_operator(session: AsyncSession, email: str) -> Operator:
    """Delete the operator of that email (which ends their sessions); the removed row."""
    operator = await operator_by_email(session, email)
    if operator is None:
        raise OperatorNotFoundError(email.lower())
    await session.delete(operator)
    return operator


def end_sessions(operator: Operator) -> None:
    """Every session of the operator ends (their cookies no longer match)."""
    operator.session_key = new_session_key()


async def record_failed_sign_in(
    session: AsyncSession, client_key: str, account_key: str, now: datetime, *, keep_since: datetime
) -> None:
    """Note a failed sign-in; attempts older than `keep_since` are dropped meanwhile."""
    session.add(SignInAttempt(client_key=client_key, account_key=account_key, created_at=now))
    await session.execute(delete(SignInAttempt).where(SignInAttempt.created_at < keep_since))


async def failed_sign_ins(
    session: AsyncSession,
    *,
    since: datetime,
    client_key: str | None = None,
    account_key: str | None = None,
) -> int:
    """How many failed sign-ins since `since` for the client, or for the client and email."""
    query = select(func.count()).select_from(SignInAttempt)
    query = query.where(SignInAttempt.created_at >= since)
    if client_key is not None:
        query = query.where(SignInAttempt.client_key == client_key)
    if account_key is not None:
        query = query.where(SignInAttempt.account_key == account_key)
    return int(await session.scalar(query) or 0)


async def forget_failed_sign_ins(session: AsyncSession, account_key: str) -> None:
    """After a successful sign-in: the earlier failures of that client and email."""
    await session.execute(delete(SignInAttempt).where(SignInAttempt.account_key == account_key))

"""Outcomes: what a send attempt makes of a queued mail, for the digest ledger and the
confirmation queue alike; each outcome is decided here, once, as a `store.Outcome`.

Owns the retry rules: a temporary failure (4xx, no connection) is retried with doubling
backoff up to `digest_max_attempts`; a permanent one (5xx, an address the relay cannot
take) fails at once; an uncertain one (no reply to the end of the message in time) is
retried once, never more, because it may have been delivered; any other error fails only
its own row; and the message in flight is finished even when its sender is cancelled.
Owns no data; imports `config`, `mailer` and `store`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from service import mailer, store
from service.config import Settings

_REPLY_LIMIT = 1000
T = TypeVar("T")


async def finish_even_if_cancelled(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end even if the caller is cancelled meanwhile: a message being
    handed to the server is finished and recorded before its claim may be released."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


# The record of an outcome lives in the store, which records it; the rules that decide
# it live here.
Outcome = store.Outcome


def sent(reply: str, message_id: str, *, article_count: int | None = None) -> Outcome:
    """The outcome of an attempt the relay accepted."""
    return Outcome(
        store.DeliveryStatus.SENT,
        reply[:_REPLY_LIMIT],
        message_id=message_id,
        article_count=article_count,
    )


def skipped(
    status: store.DeliveryStatus, reply: str | None = None, *, article_count: int | None = None
) -> Outcome:
    """The outcome of a row finished without trying to send it: not an attempt."""
    return Outcome(status, reply, article_count=article_count, counts_attempt=False)


def after_error(
    settings: Settings, error: Exception, *, attempts: int, uncertain_attempts: int, now: datetime
) -> Outcome:
    """The outcome of an attempt that raised `error`, for a row that had `attempts` and
    `uncertain_attempts` before it.

    One retry after an uncertain attempt, not none: a relay that had the whole message and
    then lost it without a reply would otherwise lose the digest; not more, so at most two
    copies arrive. Once an attempt may have delivered, a row never ends as "failed".
    """
    attempt = attempts + 1
    maybe_delivered = uncertain_attempts > 0
    if isinstance(error, mailer.SendError):
        reply = f"{error.code} {error.reply}" if error.code else error.reply
    else:
        reply = f"cannot send: {type(error).__name__}: {error}"
    reply = reply[:_REPLY_LIMIT]
    retry_at = now + timedelta(seconds=settings.digest_retry_base_seconds * 2 ** (attempt - 1))
    can_retry = attempt < settings.digest_max_attempts
    if isinstance(error, mailer.UncertainSendError):
        if not maybe_delivered and can_retry:
            return Outcome(
                store.DeliveryStatus.PENDING,
                f"uncertain, retried once: {reply}",
                next_attempt_at=retry_at,
                uncertain=True,
            )
        return Outcome(store.DeliveryStatus.UNCERTAIN, reply, uncertain=True)
    if isinstance(error, mailer.TemporarySendError) and can_retry:
        return Outcome(store.DeliveryStatus.PENDING, reply, next_attempt_at=retry_at)
    if maybe_delivered:
        return Outcome(
            store.DeliveryStatus.UNCERTAIN,
            f"an earlier attempt may have arrived; then {reply}"[:_REPLY_LIMIT],
        )
    return Outcome(
        store.DeliveryStatus.FAILED,
        reply,
        permanent_failure=isinstance(error, mailer.PermanentSendError),
    )

"""Double opt-in: requesting a subscription (rate-limited), the confirmation mail, confirming,
unsubscribing and changing preferences. Imports `subscribers.forms`, `subscribers.tokens`,
`store`, `consent`, `mailer`, `templating`."""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import consent, mailer, store, templating
from service.config import Settings
from service.errors import PartnerpostError
from service.subscribers.forms import PreferencesIn, SubscriberIn
from service.subscribers.tokens import InvalidTokenError, Tokens


class RateLimitedError(PartnerpostError):
    """Too many subscription requests from one client."""

    def __init__(self, client: str) -> None:
        self.client = client
        super().__init__(f"too many subscription requests from {client!r}")


async def find_or_create_subscriber(
    session: AsyncSession, data: SubscriberIn, now: datetime
) -> store.Subscriber:
    existing = await store.subscriber_by_name(session, data.name)
    if existing is not None:
        return existing
    return await store.create_subscriber(
        session,
        name=data.name,
        frequency=data.frequency,
        ags=data.ags,
        bundesland=data.land(),
        partner=data.partner,
        topics=data.topics,
        now=now,
    )


def confirmation_mail(
    settings: Settings,
    tokens: Tokens,
    address: store.Address,
    record: store.Consent,
    now: datetime,
) -> mailer.Envelope:
    env = templating.environment()
    legal = consent.legal_links(settings)
    context = {
        "subscriber": address.subscriber,
        "confirm_url": tokens.confirm_url(record),
        "valid_hours": settings.confirm_max_age_hours,
        "kept_days": math.ceil(_unconfirmed_kept(settings) / timedelta(days=1)),
        "imprint": settings.imprint,
        "site_url": settings.link(""),
        "privacy_url": legal.privacy_url,
        "imprint_url": legal.imprint_url,
    }
    message_id = mailer.message_id(settings, f"confirm.{address.id}.{int(now.timestamp())}")
    message = mailer.compose(
        settings,
        to_name=address.subscriber.name,
        to_address=address.email,
        subject="Bitte bestätigen Sie Ihr Abonnement: Kommunalpartnerschaften Ukraine",
        text=env.get_template("email/confirmation.txt.j2").render(context),
        html=env.get_template("email/confirmation.html.j2").render(context),
        message_id=message_id,
        date=now,
    )
    return mailer.envelope(settings, message, address.email, message_id)


async def request_subscription(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    data: SubscriberIn,
    client: str,
    now: datetime,
    source: str = consent.Source.FORM,
) -> None:
    """Start double opt-in for the address: record the request as the start of a consent
    and queue its confirmation mail, which the scheduler sends (and retries) outside the
    request. The caller answers the same whatever happens here (no enumeration); only too
    many requests from one client raise."""
    client_hash = consent.client_hash(settings, client)
    async with sessions() as session, session.begin():
        hour_ago = now - timedelta(hours=1)
        if (
            await store.count_recent_requests(session, since=hour_ago, client=client_hash)
            >= settings.confirmations_per_client
        ):
            raise RateLimitedError(client)
        address = await store.address_by_email(session, data.email)
        if address is None:
            subscriber = await find_or_create_subscriber(session, data, now)
            address = await store.add_address(
                session, subscriber, data.email, store.AddressStatus.PENDING, now
            )
        mail_it = address.status != store.AddressStatus.ACTIVE and (
            await store.count_recent_requests(
                session, since=now - timedelta(days=1), email=data.email
            )
            < settings.confirmations_per_address
        )
        await store.record_request(session, data.email, client_hash, mail_it, now)
        if mail_it:
            await store.add_consent(
                session,
                consent.new_request(
                    settings,
                    address,
                    source=source,
                    client=client,
                    nonce=secrets.token_urlsafe(24),
                    now=now,
                ),
            )
            await store.enqueue_confirmation(session, address.id, now)


async def pending_confirmation(
    settings: Settings, session: AsyncSession, token: str
) -> store.Address:
    """The address a confirmation link would confirm; changes nothing (a GET shows it)."""
    _, address = await Tokens(settings).consent(session, token)
    return address


async def confirm(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    token: str,
    client: str,
    now: datetime,
) -> store.Address:
    """Confirm a subscription: only a POST gets here, and each link works once."""
    async with sessions() as session, session.begin():
        record, address = await Tokens(settings).consent(session, token)
        if record.nonce is None or not await store.use_consent(
            session, record.id, record.nonce, now, consent.client_hash(settings, client)
        ):
            raise InvalidTokenError("confirm", "already used")
        # Older links of the same address must not confirm it again later.
        await store.void_open_consents(session, address.id, now)
        store.activate(address, now)
        return address


async def unsubscribe(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], token: str, now: datetime
) -> store.Address:
    async with sessions() as session, session.begin():
        address = await Tokens(settings).address(session, "unsubscribe", token)
        store.unsubscribe(address, now)
        await store.void_open_consents(session, address.id, now)
        return address


async def update_preferences(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    token: str,
    preferences: PreferencesIn,
) -> store.Subscriber:
    async with sessions() as session, session.begin():
        address = await Tokens(settings).address(session, "preferences", token)
        subscriber = address.subscriber
        subscriber.frequency = str(preferences.frequency)
        subscriber.topics = list(dict.fromkeys(preferences.topics))
        return subscriber


async def purge_unconfirmed(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], now: datetime
) -> int:
    """Erase the addresses that never confirmed within `unconfirmed_keep_days` of their
    last request (see `store.purge_unconfirmed`); never before their link expired."""
    async with sessions() as session, session.begin():
        return await store.purge_unconfirmed(session, now - _unconfirmed_kept(settings))


def _unconfirmed_kept(settings: Settings) -> timedelta:
    """How long a never-confirmed address is kept after its last request: as configured,
    but never less than its link is valid."""
    return max(
        timedelta(days=settings.unconfirmed_keep_days),
        timedelta(hours=settings.confirm_max_age_hours),
    )

"""Consent: the subscription form's text and version, the consent record, the legal links
and a person's rights (access as JSON, erasure).

Owns what the form tells people before they subscribe (`FORM_NOTICE`, versioned by
`FORM_VERSION`), how a request's client address is kept (a keyed hash), where the privacy
notice and imprint live, and what `subscribers show | export | forget` read and erase.
Imports `config` and `store`.

Data minimisation (Art. 5(1)(c) DSGVO): to prove consent we need to tell one requester
from another, not to know who they are. So the client's IP address is stored as an HMAC
keyed with the secret key: equal addresses give equal values, but without the key nobody
can recover the address by hashing all 2³² IPv4 addresses, which an unkeyed hash allows.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service import store
from service.config import Settings

# Bump whenever FORM_NOTICE (or what the form asks for) changes: consent records name it.
FORM_VERSION = "abonnieren-2026-11-v1"
FORM_NOTICE = (
    "Wir speichern den Namen Ihrer Kommune, Ihre E-Mail-Adresse und die gewählte Häufigkeit "
    "und Themen, um Ihnen den Newsletter zu schicken. Als Nachweis Ihrer Einwilligung "
    "speichern wir Zeitpunkt und Fassung dieses Textes sowie einen verschlüsselten Prüfwert "
    "Ihrer IP-Adresse (nicht die Adresse selbst). Sie können sich jederzeit über den Link in "
    "jeder E-Mail abmelden; auf Wunsch löschen wir alle Angaben."
)


class Source:
    """Where a consent came from."""

    FORM = "form"
    API = "api"
    OPERATOR = "operator"


def keyed_hash(settings: Settings, purpose: str, value: str) -> str:
    """HMAC-SHA256 of `value` under the secret key, separated by purpose; hex."""
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()


def client_hash(settings: Settings, client: str) -> str:
    """What is stored of a request's client address (see the module docstring)."""
    return keyed_hash(settings, "client", client)


@dataclass(frozen=True)
class LegalLinks:
    privacy_url: str
    imprint_url: str


def legal_links(settings: Settings) -> LegalLinks:
    """The privacy notice and imprint: the configured URLs, else the built-in pages."""
    return LegalLinks(
        privacy_url=settings.privacy_url or settings.link("datenschutz"),
        imprint_url=settings.imprint_url or settings.link("impressum"),
    )


def paragraphs(text: str) -> list[str]:
    """A setting's text as paragraphs: a blank line (or a literal \\n\\n) separates them."""
    normalised = text.replace("\\n", "\n")
    return [" ".join(p.split()) for p in normalised.split("\n\n") if p.strip()]


def new_request(
    settings: Settings,
    address: store.Address,
    *,
    source: str,
    client: str,
    nonce: str,
    now: datetime,
) -> store.Consent:
    """The consent record of a subscription request, before it is confirmed."""
    return store.Consent(
        address_id=address.id,
        source=source,
        form_version=FORM_VERSION,
        client_hash=client_hash(settings, client),
        nonce=nonce,
        issued_status=str(address.status),
        requested_at=now,
    )


def operator_record(address: store.Address, now: datetime) -> store.Consent:
    """The record of an address the operator vouches for (confirmed outside partnerpost)."""
    return store.Consent(
        address_id=address.id,
        source=Source.OPERATOR,
        issued_status=str(address.status),
        requested_at=now,
        confirmed_at=now,
    )


# --- a person's rights ----------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _consent_json(consent: store.Consent) -> dict[str, Any]:
    return {
        "source": consent.source,
        "form_version": consent.form_version,
        "form_text": FORM_NOTICE if consent.form_version == FORM_VERSION else None,
        "requested_at": _time(consent.requested_at),
        "requested_from_hash": consent.client_hash,
        "confirmed_at": _time(consent.confirmed_at),
        "confirmed_from_hash": consent.confirm_client_hash,
        "voided_at": _time(consent.voided_at),
    }


async def export(session: AsyncSession, email: str) -> dict[str, Any] | None:
    """Everything stored about an address (Art. 15 DSGVO), as JSON-ready data."""
    address = await store.address_by_email(session, email)
    if address is None:
        return None
    subscriber = address.subscriber
    await session.refresh(subscriber, ["addresses"])
    return {
        "email": address.email,
        "status": address.status,
        "created_at": _time(address.created_at),
        "confirmed_at": _time(address.confirmed_at),
        "unsubscribed_at": _time(address.unsubscribed_at),
        "consecutive_failures": address.consecutive_failures,
        "municipality": {
            "name": subscriber.name,
            "ags": subscriber.ags,
            "bundesland": subscriber.bundesland,
            "partner": subscriber.partner,
            "frequency": subscriber.frequency,
            "topics": list(subscriber.topics),
            "created_at": _time(subscriber.created_at),
            "other_addresses": len(subscriber.addresses) - 1,
        },
        "consents": [_consent_json(c) for c in await store.consents_of(session, address.id)],
        "deliveries": [
            {
                "period": d.period_key,
                "status": d.status,
                "articles": d.article_count,
                "attempts": d.attempts,
                "sent_at": _time(d.sent_at),
                "message_id": d.message_id,
                "last_reply": d.last_reply,
            }
            for d in await store.deliveries_of(session, address.id)
        ],
        "subscription_requests": [
            {
                "at": _time(r.created_at),
                "mailed": r.mailed,
                "client_hash": r.client,
            }
            for r in await store.requests_for(session, address.email)
        ],
    }


async def forget(session: AsyncSession, email: str) -> dict[str, int] | None:
    """Erase an address (Art. 17 DSGVO); the anonymous counts it leaves, or None."""
    address = await store.address_by_email(session, email)
    if address is None:
        return None
    return await store.erase_address(session, address)

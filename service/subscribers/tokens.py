"""Signed links for confirming, unsubscribing and changing preferences. Imports `store`,
`consent`, `config`, `errors`."""

from __future__ import annotations

import hmac
from typing import Any, NamedTuple

from itsdangerous import (
    BadSignature,
    SignatureExpired,
    Signer,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import want_bytes
from sqlalchemy.ext.asyncio import AsyncSession

from service import consent, store
from service.config import Settings
from service.errors import PartnerpostError


class InvalidTokenError(PartnerpostError, ValueError):
    """A link's token is forged, expired, or meant for something else."""

    def __init__(self, purpose: str, reason: str) -> None:
        self.purpose = purpose
        self.reason = reason
        super().__init__(f"invalid {purpose} token: {reason}")


class _KeyedSigner(Signer):
    """itsdangerous' `Signer`, deriving each secret key's signing key once instead of on
    every signature (the derivation was most of the cost of signing a digest's links)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[bytes | None, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = None if secret_key is None else want_bytes(secret_key)
        derived = self._derived.get(key)
        if derived is None:
            derived = self._derived[key] = super().derive_key(key)
        return derived


class AddressTokens(NamedTuple):
    """The unsubscribe and preferences tokens of one address."""

    unsubscribe: str
    preferences: str


class Tokens:
    """Signed links: each purpose has its own salt, so one never passes for another.

    No token carries the address in readable form. Unsubscribe and preference tokens carry
    the address id and a keyed fingerprint of the address (so a token stops working when
    the address changes); a confirmation token carries the id of its consent record and
    that record's one-time nonce.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        secret = settings.secret_key.get_secret_value()
        self._confirm = URLSafeTimedSerializer(secret, salt="confirm")
        self._unsubscribe = URLSafeSerializer(secret, salt="unsubscribe", signer=_KeyedSigner)
        self._preferences = URLSafeSerializer(secret, salt="preferences", signer=_KeyedSigner)
        # Signers kept for signing: `dumps` makes a new one, deriving the key, every time.
        self._unsubscribe_signer = self._unsubscribe.make_signer()
        self._preferences_signer = self._preferences.make_signer()

    def _fingerprint(self, email: str) -> str:
        return consent.keyed_hash(self._settings, "address", email.lower())[:16]

    def _payload(self, address: store.Address) -> bytes:
        """What both tokens of an address carry, serialized as their serializers do (the
        two differ only in salt, so one serialization serves both)."""
        return self._unsubscribe.dump_payload(
            {"a": address.id, "f": self._fingerprint(address.email)}
        )

    def confirm(self, record: store.Consent) -> str:
        return self._confirm.dumps({"c": record.id, "n": record.nonce})

    def unsubscribe(self, address: store.Address) -> str:
        return self._unsubscribe_signer.sign(self._payload(address)).decode("ascii")

    def preferences(self, address: store.Address) -> str:
        return self._preferences_signer.sign(self._payload(address)).decode("ascii")

    def of_address(self, address: store.Address) -> AddressTokens:
        """Both tokens of an address, the same as `unsubscribe` and `preferences` make,
        its payload serialized once."""
        payload = self._payload(address)
        return AddressTokens(
            self._unsubscribe_signer.sign(payload).decode("ascii"),
            self._preferences_signer.sign(payload).decode("ascii"),
        )

    def confirm_url(self, record: store.Consent) -> str:
        return self._settings.link(f"bestaetigen/{self.confirm(record)}")

    def unsubscribe_url(self, address: store.Address) -> str:
        return self.unsubscribe_link(self.unsubscribe(address))

    def unsubscribe_link(self, token: str) -> str:
        return self._settings.link(f"abmelden/{token}")

    def preferences_url(self, address: store.Address) -> str:
        return self.preferences_link(self.preferences(address))

    def preferences_link(self, token: str) -> str:
        return self._settings.link(f"einstellungen/{token}")

    async def address(self, session: AsyncSession, purpose: str, token: str) -> store.Address:
        """The address an unsubscribe or preferences token was made for;
        `InvalidTokenError` if it is not valid."""
        serializers = {"unsubscribe": self._unsubscribe, "preferences": self._preferences}
        if purpose not in serializers:
            raise InvalidTokenError(purpose, "unknown purpose")
        try:
            payload = serializers[purpose].loads(token)
        except BadSignature as exc:
            raise InvalidTokenError(purpose, "bad signature") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("a"), int):
            raise InvalidTokenError(purpose, "malformed")
        address = await store.address_by_id(session, payload["a"])
        if address is None:
            raise InvalidTokenError(purpose, "made for another address")
        # Links in mails sent before tokens became opaque carry the address itself
        # ("e"); they stay valid, so unsubscribing from an old digest still works.
        matches = (
            hmac.compare_digest(str(payload.get("f", "")), self._fingerprint(address.email))
            if "f" in payload
            else payload.get("e") == address.email
        )
        if not matches:
            raise InvalidTokenError(purpose, "made for another address")
        return address

    async def consent(
        self, session: AsyncSession, token: str
    ) -> tuple[store.Consent, store.Address]:
        """The open consent a confirmation token belongs to, with its address;
        `InvalidTokenError` if the token is forged, expired, used, voided, or the address
        unsubscribed or bounced since it was issued."""
        purpose = "confirm"
        try:
            payload = self._confirm.loads(
                token, max_age=self._settings.confirm_max_age_hours * 3600
            )
        except SignatureExpired as exc:
            raise InvalidTokenError(purpose, "expired") from exc
        except BadSignature as exc:
            raise InvalidTokenError(purpose, "bad signature") from exc
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("c"), int)
            or not isinstance(payload.get("n"), str)
        ):
            raise InvalidTokenError(purpose, "malformed")
        record = await store.consent_by_id(session, payload["c"])
        if record is None or record.nonce is None:
            raise InvalidTokenError(purpose, "no such request")
        if not hmac.compare_digest(record.nonce, payload["n"]):
            raise InvalidTokenError(purpose, "made for another request")
        if record.confirmed_at is not None:
            raise InvalidTokenError(purpose, "already used")
        if record.voided_at is not None:
            raise InvalidTokenError(purpose, "voided")
        address = await store.address_by_id(session, record.address_id)
        if address is None:
            raise InvalidTokenError(purpose, "address is gone")
        if address.status != record.issued_status or (
            address.unsubscribed_at is not None and address.unsubscribed_at > record.requested_at
        ):
            raise InvalidTokenError(purpose, "the address changed since the link was issued")
        return record, address

"""Subscribers: validating municipalities and addresses, consent, and signed links.

Owns the subscription rules: what a valid subscriber is, double opt-in with signed,
expiring, one-time confirmation links, rate limits on confirmation mails, unsubscribe and
preference tokens, and the operator's CSV import. Imports `config`, `store`, `consent`,
`mailer`, `templating` and `errors`.
"""

from __future__ import annotations

import codecs
import csv
import hmac
import io
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import consent, mailer, store, templating
from service.config import Settings
from service.errors import IngestInputError, PartnerpostError
from service.text import describe_validation_error, one_line

log = logging.getLogger(__name__)

BUNDESLAENDER = {
    "01": "Schleswig-Holstein",
    "02": "Hamburg",
    "03": "Niedersachsen",
    "04": "Bremen",
    "05": "Nordrhein-Westfalen",
    "06": "Hessen",
    "07": "Rheinland-Pfalz",
    "08": "Baden-Württemberg",
    "09": "Bayern",
    "10": "Saarland",
    "11": "Berlin",
    "12": "Brandenburg",
    "13": "Mecklenburg-Vorpommern",
    "14": "Sachsen",
    "15": "Sachsen-Anhalt",
    "16": "Thüringen",
}


class InvalidTokenError(PartnerpostError, ValueError):
    """A link's token is forged, expired, or meant for something else."""

    def __init__(self, purpose: str, reason: str) -> None:
        self.purpose = purpose
        self.reason = reason
        super().__init__(f"invalid {purpose} token: {reason}")


class RateLimitedError(PartnerpostError):
    """Too many subscription requests from one client."""

    def __init__(self, client: str) -> None:
        self.client = client
        super().__init__(f"too many subscription requests from {client!r}")


Name = Annotated[str, Field(min_length=2, max_length=200), AfterValidator(one_line)]
Topic = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(one_line)]


class SubscriberIn(BaseModel):
    """A municipality with one contact address, as a form, the API or a CSV row gives it."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    name: Name
    email: EmailStr
    ags: str | None = Field(default=None, pattern=r"^\d{8}$")
    bundesland: str | None = None
    partner: Name | None = None
    frequency: store.Frequency = store.Frequency.WEEKLY
    topics: list[Topic] = Field(default_factory=list, max_length=20)

    @field_validator("ags", "bundesland", "partner", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ags")
    @classmethod
    def _known_land(cls, value: str | None) -> str | None:
        if value is not None and value[:2] not in BUNDESLAENDER:
            raise ValueError(f"{value!r} is no Amtlicher Gemeindeschlüssel: unknown Land code")
        return value

    @field_validator("bundesland")
    @classmethod
    def _known_bundesland(cls, value: str | None) -> str | None:
        if value is not None and value not in BUNDESLAENDER.values():
            raise ValueError(f"{value!r} is no Bundesland")
        return value

    @model_validator(mode="after")
    def _ags_matches_land(self) -> SubscriberIn:
        if self.ags and self.bundesland and BUNDESLAENDER[self.ags[:2]] != self.bundesland:
            raise ValueError(
                f"AGS {self.ags} lies in {BUNDESLAENDER[self.ags[:2]]}, not in {self.bundesland}"
            )
        return self

    def land(self) -> str | None:
        return self.bundesland or (BUNDESLAENDER[self.ags[:2]] if self.ags else None)


_FIELD_NAMES = {
    "name": "Kommune",
    "email": "E-Mail-Adresse",
    "ags": "Amtlicher Gemeindeschlüssel",
    "bundesland": "Bundesland",
    "partner": "Partnerkommune",
    "frequency": "Häufigkeit",
    "topics": "Themen",
}


def german_error(error: Any) -> str:
    """A validation error as a town hall's staff should read it."""
    field = str(error["loc"][0]) if error["loc"] else ""
    label = _FIELD_NAMES.get(field, "Angaben")
    kind = error["type"]
    if field == "email":
        return f"{label}: bitte eine gültige Adresse angeben, z. B. name@stadt.de"
    if field == "ags":
        return f"{label}: acht Ziffern, z. B. 14713000 für Leipzig"
    if kind == "missing":
        return f"{label}: bitte ausfüllen"
    if kind in {"string_too_short", "string_too_long"}:
        return f"{label}: bitte zwischen 2 und 200 Zeichen"
    return f"{label}: ungültige Angabe"


# --- tokens ---------------------------------------------------------------------------


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
        self._unsubscribe = URLSafeSerializer(secret, salt="unsubscribe")
        self._preferences = URLSafeSerializer(secret, salt="preferences")

    def _fingerprint(self, email: str) -> str:
        return consent.keyed_hash(self._settings, "address", email.lower())[:16]

    def _payload(self, address: store.Address) -> dict[str, Any]:
        return {"a": address.id, "f": self._fingerprint(address.email)}

    def confirm(self, record: store.Consent) -> str:
        return self._confirm.dumps({"c": record.id, "n": record.nonce})

    def unsubscribe(self, address: store.Address) -> str:
        return self._unsubscribe.dumps(self._payload(address))

    def preferences(self, address: store.Address) -> str:
        return self._preferences.dumps(self._payload(address))

    def confirm_url(self, record: store.Consent) -> str:
        return self._settings.link(f"bestaetigen/{self.confirm(record)}")

    def unsubscribe_url(self, address: store.Address) -> str:
        return self.unsubscribe_link(self.unsubscribe(address))

    def unsubscribe_link(self, token: str) -> str:
        return self._settings.link(f"abmelden/{token}")

    def preferences_url(self, address: store.Address) -> str:
        return self._settings.link(f"einstellungen/{self.preferences(address)}")

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


# --- subscribing ----------------------------------------------------------------------


async def _find_or_create_subscriber(
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
            subscriber = await _find_or_create_subscriber(session, data, now)
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


class PreferencesIn(BaseModel):
    frequency: store.Frequency
    topics: list[Topic] = Field(default_factory=list, max_length=20)


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


# --- the operator's CSV import --------------------------------------------------------

CSV_COLUMNS = ("name", "email", "ags", "bundesland", "partner", "frequency", "topics")


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _topics(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").replace("|", ";").split(";") if t.strip()]


# Excel saves "CSV UTF-8" with a byte order mark, and plain "CSV" on a German Windows
# in Windows-1252; try them in that order unless the operator names the encoding.
CSV_ENCODINGS = ("utf-8-sig", "cp1252")


def decode_csv(data: bytes, source: str, encoding: str | None = None) -> tuple[str, str]:
    """The text of a CSV file and the encoding it was read in."""
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise IngestInputError(source, f"unknown encoding {encoding!r}") from exc
    for candidate in (encoding,) if encoding else CSV_ENCODINGS:
        try:
            return data.decode(candidate), candidate
        except UnicodeDecodeError as exc:
            problem = f"byte {data[exc.start]:#04x} at offset {exc.start}"
    tried = encoding or " nor ".join(CSV_ENCODINGS)
    raise IngestInputError(
        source, f"not {tried} ({problem}); name the file's encoding with --encoding"
    )


async def import_csv(
    sessions: async_sessionmaker[AsyncSession], text: str, now: datetime, source: str = "CSV"
) -> ImportReport:
    """Import addresses the operator vouches for (active at once); bad rows are reported
    with their line and reason, the good ones imported."""
    report = ImportReport()
    reader = csv.DictReader(io.StringIO(text))
    missing = {"name", "email"} - set(reader.fieldnames or [])
    if missing:
        report.rejected.append((1, f"header lacks the column(s) {', '.join(sorted(missing))}"))
        return report
    unknown = set(reader.fieldnames or []) - set(CSV_COLUMNS)
    if unknown:
        report.rejected.append((1, f"unknown column(s) {', '.join(sorted(unknown))}"))
        return report
    valid: list[tuple[int, SubscriberIn]] = []
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise IngestInputError(source, f"after line {reader.line_num}: {exc}") from exc
    for line, row in rows:
        raw: dict[str, Any] = {k: v for k, v in row.items() if k and v is not None and v.strip()}
        raw["topics"] = _topics(row.get("topics"))
        raw.setdefault("frequency", "weekly")
        try:
            valid.append((line, SubscriberIn.model_validate(raw)))
        except ValidationError as exc:
            report.rejected.append((line, describe_validation_error(exc, "row")))
    imported = await import_rows(sessions, [data for _, data in valid], now)
    report.added, report.unchanged = imported.added, imported.unchanged
    lines = {data.email: line for line, data in valid}
    report.rejected += [(lines[email], reason) for email, reason in imported.refused]
    report.rejected.sort()
    return report


@dataclass
class _Imported:
    added: int = 0
    unchanged: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)


async def import_rows(
    sessions: async_sessionmaker[AsyncSession], rows: list[SubscriberIn], now: datetime
) -> _Imported:
    """Add operator-confirmed addresses (active at once); known addresses stay as they are,
    and one that unsubscribed itself is not subscribed again."""
    result = _Imported()
    async with sessions() as session, session.begin():
        for data in rows:
            existing = await store.address_by_email(session, data.email)
            if existing is not None:
                if existing.status == store.AddressStatus.UNSUBSCRIBED:
                    result.refused.append(
                        (
                            data.email,
                            f"{data.email} unsubscribed itself; only it can subscribe again",
                        )
                    )
                else:
                    result.unchanged += 1
                continue
            subscriber = await _find_or_create_subscriber(session, data, now)
            address = await store.add_address(
                session, subscriber, data.email, store.AddressStatus.ACTIVE, now
            )
            await store.add_consent(session, consent.operator_record(address, now))
            result.added += 1
    return result

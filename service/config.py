"""Settings: every knob an operator turns, read once from the environment.

Owns the `Settings` class. `cli` and `web.create_app` build one instance and pass it down;
no module keeps a settings object of its own, so tests hand in plain keyword arguments.
Imports nothing else from the package.
"""

from __future__ import annotations

import ipaddress
import re
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import ConfigurationError

ENV_PREFIX = "PARTNERPOST_"
PLACEHOLDER_SECRET = "development-only-secret-change-me-in-production"
DEFAULT_PRIVACY_TEXT = (
    "Verantwortlich für die Verarbeitung ist die im Impressum genannte Stelle.\n\n"
    "Für den Newsletter speichern wir den Namen Ihrer Kommune, die E-Mail-Adresse, die "
    "gewählte Häufigkeit und Themen sowie den Nachweis Ihrer Einwilligung (Zeitpunkt, "
    "Fassung des Anmeldetextes und einen verschlüsselten Prüfwert Ihrer IP-Adresse, nicht die "
    "Adresse selbst). Rechtsgrundlage ist Ihre Einwilligung (Art. 6 Abs. 1 lit. a DSGVO), "
    "die Sie jederzeit über den Abmeldelink in jeder E-Mail widerrufen können.\n\n"
    "Sie haben das Recht auf Auskunft (Art. 15 DSGVO), Berichtigung, Löschung (Art. 17 "
    "DSGVO) und Beschwerde bei einer Datenschutz-Aufsichtsbehörde. Wenden Sie sich dazu an "
    "die im Impressum genannte Stelle."
)
DEFAULT_IMPRINT_TEXT = (
    "partnerpost · Nachrichten über kommunale Partnerschaften mit der Ukraine\n\n"
    "Bitte tragen Sie hier Anschrift, Vertretungsberechtigte und Kontakt der herausgebenden "
    "Stelle ein (PARTNERPOST_IMPRINT_TEXT)."
)

# Hosts that mean "every interface": not an address a browser can open.
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.IGNORECASE)


def mask_url(value: str) -> str:
    """`value` with the password of any URL in it replaced by `***`."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", value)


class Settings(BaseSettings):
    """Validated configuration; each field maps to `PARTNERPOST_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/partnerpost.sqlite3",
        repr=False,  # may hold a password
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    base_url: AnyHttpUrl | None = Field(
        default=None,
        description="Public address; every link in feeds and mails starts with it. "
        "Unset: http://HOST:PORT of the server.",
    )
    host: str = Field(default="127.0.0.1", description="Address `serve` listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `serve` listens on.")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes `serve` forks to share its port (one per core serves most).",
    )
    feeds_dir: Path | None = Field(
        default=None,
        description="Optional export of the feeds as files, for a reverse proxy to serve; "
        "unset or empty: none (the feeds live in the database and are served from memory).",
    )
    admin_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token of the admin API; empty disables the admin API.",
    )
    feed_author: str = Field(
        default="Kommunalpartnerschaften Ukraine",
        description="Author named in every feed (Atom requires one).",
    )
    site_title: str = Field(
        default="",
        description="Feed and page title; empty uses the heading of the imported listing.",
    )
    feed_size: int = Field(default=50, ge=1, le=1000, description="Articles in each feed.")
    feed_max_age: int = Field(
        default=300, ge=0, description="Cache-Control max-age of feed responses, in seconds."
    )
    websub_hub: AnyHttpUrl | None = Field(
        default=None,
        description="WebSub hub announced in every feed and told of each changed feed; "
        "unset: no hub.",
    )
    feeds_check_seconds: int = Field(
        default=30, ge=1, description="How often the scheduler checks whether feeds are stale."
    )
    feeds_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often a server checks the database for newly published feeds.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="text for people, json for one JSON object per line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe log level written."
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body accepted, in bytes; larger ones get 413.",
    )
    metrics_require_token: bool = Field(
        default=False, description="Protect /metrics with the admin bearer token."
    )
    shutdown_grace_seconds: float = Field(
        default=30, gt=0, description="On SIGTERM, how long the message in flight may take."
    )
    environment: Literal["development", "production"] = Field(
        default="development",
        description="production refuses the placeholder secret key.",
    )
    secret_key: SecretStr = Field(
        default=SecretStr(PLACEHOLDER_SECRET),
        description="Signs confirmation and unsubscribe links; at least 32 characters.",
    )

    # --- mail ---------------------------------------------------------------------
    mailer: Literal["file", "smtp"] = Field(
        default="file", description="file writes .eml files to the outbox; smtp sends."
    )
    outbox_dir: Path = Field(default=Path("./var/outbox"), description="Folder of .eml files.")
    smtp_host: str = Field(default="localhost", description="SMTP relay host.")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP relay port.")
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        default="none", description="none, starttls, or tls (implicit TLS, usually port 465)."
    )
    smtp_ca_file: Path | None = Field(
        default=None,
        description="CA bundle to verify the relay's certificate (system CAs if unset).",
    )
    smtp_username: str = Field(default="", description="SMTP login; empty sends without.")
    smtp_password: SecretStr = Field(default=SecretStr(""), description="SMTP password.")
    smtp_timeout: float = Field(default=30, gt=0, description="Seconds per SMTP command.")
    smtp_data_timeout: float = Field(
        default=600,
        gt=0,
        description="Seconds to wait for the reply to the end of a message (RFC 5321 "
        "4.5.3.2.6 recommends 10 minutes); without a reply by then the delivery is uncertain.",
    )
    smtp_pool_size: int = Field(
        default=1,
        ge=1,
        le=50,
        description="SMTP connections kept open and reused, each sending one message at a "
        "time; after a hard kill, up to this many messages in flight may be sent twice.",
    )
    smtp_max_per_second: float = Field(
        default=0, ge=0, description="Messages per second at most; 0 means no limit."
    )
    mail_from: str = Field(
        default="Kommunalpartnerschaften Ukraine <partnerpost@localhost>",
        description="From header: display name and address; its domain names Message-IDs.",
    )
    imprint: str = Field(
        default="partnerpost · Nachrichten über kommunale Partnerschaften mit der Ukraine",
        description="Imprint text in the footer of every mail.",
    )
    privacy_url: str = Field(
        default="",
        description="Address of the privacy notice; empty serves the built-in page /datenschutz.",
    )
    privacy_text: str = Field(
        default=DEFAULT_PRIVACY_TEXT,
        description="Text of the built-in privacy notice /datenschutz; a blank line starts a "
        "paragraph.",
    )
    imprint_url: str = Field(
        default="",
        description="Address of the imprint; empty serves the built-in page /impressum.",
    )
    imprint_text: str = Field(
        default=DEFAULT_IMPRINT_TEXT,
        description="Text of the built-in imprint /impressum; a blank line starts a paragraph.",
    )
    dkim_selector: str = Field(default="", description="DKIM selector; empty: no signing.")
    dkim_private_key_file: Path | None = Field(
        default=None, description="PEM private key for DKIM signing."
    )

    # --- digests ------------------------------------------------------------------
    digest_cron_daily: str = Field(default="0 7 * * *", description="Daily period end.")
    digest_cron_weekly: str = Field(default="0 7 * * mon", description="Weekly period end.")
    digest_cron_monthly: str = Field(default="0 7 1 * *", description="Monthly period end.")
    digest_retry_seconds: int = Field(
        default=60, ge=1, description="How often due and retried deliveries are sent."
    )
    digest_max_attempts: int = Field(
        default=5, ge=1, description="Attempts at one digest before it counts as failed."
    )
    digest_retry_base_seconds: float = Field(
        default=60, ge=0, description="First retry delay; doubles with every attempt."
    )
    bounce_after_failures: int = Field(
        default=3, ge=1, description="Consecutive permanent failures that mark an address bounced."
    )
    digest_batch_size: int = Field(default=100, ge=1, description="Deliveries claimed at once.")
    digest_max_articles: int = Field(
        default=25,
        ge=1,
        description="Articles a digest lists; it links the archive for the rest.",
    )
    digest_lease_seconds: int = Field(
        default=600, ge=10, description="After this, a crashed worker's claims are reclaimed."
    )
    confirm_max_age_hours: int = Field(
        default=72, ge=1, description="How long a confirmation link stays valid."
    )
    unconfirmed_keep_days: int = Field(
        default=30, ge=1, description="Erase a never-confirmed address this long after its request."
    )
    confirmations_per_address: int = Field(
        default=3, ge=1, description="Confirmation mails to one address per 24 hours."
    )
    confirmation_send_seconds: int = Field(
        default=10, ge=1, description="How often queued confirmation mails are sent or retried."
    )
    confirmations_per_client: int = Field(
        default=10, ge=1, description="Subscription requests from one client per hour."
    )

    # --- sources ------------------------------------------------------------------
    sources_poll_seconds: int = Field(
        default=30, ge=1, description="How often the scheduler looks for sources due a fetch."
    )
    sources_allow_private: bool = Field(
        default=False,
        description="Allow sources on loopback and private addresses (an intranet server); "
        "off, such fetches are refused, redirects included.",
    )
    sources_timeout_seconds: float = Field(
        default=30, gt=0, description="Longest a fetch of one source may take, redirects included."
    )
    sources_max_bytes: int = Field(
        default=10_000_000, ge=1024, description="Largest source body read, unpacked; larger fail."
    )
    sources_user_agent: str = Field(
        default="",
        description="User-Agent of fetches; empty: 'partnerpost/VERSION (+PUBLIC URL)'.",
    )
    sources_concurrency: int = Field(
        default=4, ge=1, le=50, description="Sources fetched at the same time by one process."
    )
    sources_lease_seconds: int = Field(
        default=300, ge=10, description="After this, a crashed worker's source claims lapse."
    )

    trusted_proxies: str = Field(
        default="",
        description="Comma-separated IPs or CIDR networks of reverse proxies whose "
        "X-Forwarded-For is believed; empty believes none.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is no IP address or CIDR network") from None
        return value

    @field_validator("privacy_url", "imprint_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} must be an absolute http(s) URL, or empty")
        return value

    @field_validator("feeds_dir", mode="before")
    @classmethod
    def _empty_is_no_export(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                f"{mask_url(value)!r} is not supported: use sqlite+aiosqlite:///PATH "
                "or postgresql+asyncpg://USER@HOST/DB"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _no_query(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is None:
            return None
        if value.query or value.fragment:
            raise ValueError(f"{str(value)!r} must not carry a query or fragment")
        return value

    @field_validator("mail_from")
    @classmethod
    def _mailbox(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(c in value for c in "\r\n"):
            raise ValueError(f"{value!r} is no mailbox like 'Name <name@example.org>'")
        return value

    @field_validator("digest_cron_daily", "digest_cron_weekly", "digest_cron_monthly")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is no cron expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _real_secret_in_production(self) -> Settings:
        secret = self.secret_key.get_secret_value()
        if self.environment == "production" and (secret == PLACEHOLDER_SECRET or len(secret) < 32):
            raise _FieldProblem(
                "secret_key", "must be a random value of at least 32 characters in production"
            )
        if self.dkim_selector and self.dkim_private_key_file is None:
            raise _FieldProblem("dkim_private_key_file", "required when dkim_selector is set")
        return self

    @property
    def uses_placeholder_secret(self) -> bool:
        """True while links are signed with the key everybody can read in the source."""
        return self.secret_key.get_secret_value() == PLACEHOLDER_SECRET

    def check_listen_address(self, host: str) -> None:
        """Refuse to serve beyond this machine with the placeholder secret: anyone could
        forge confirmation and unsubscribe links with it."""
        if self.uses_placeholder_secret and not is_loopback(host):
            raise ConfigurationError(
                f"PARTNERPOST_SECRET_KEY is the development placeholder; refusing to serve on "
                f"{host!r}, which other machines can reach. Set a random key of at least 32 "
                "characters, or serve on 127.0.0.1."
            )

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [part.strip() for part in self.trusted_proxies.split(",") if part.strip()]

    @property
    def mail_domain(self) -> str:
        return parseaddr(self.mail_from)[1].rsplit("@", 1)[1]

    @property
    def hub_url(self) -> str | None:
        """The WebSub hub as feeds name it, or None."""
        return str(self.websub_hub) if self.websub_hub is not None else None

    @property
    def public_url(self) -> str:
        """Base URL without a trailing slash, for joining paths onto: PARTNERPOST_BASE_URL,
        else the address `serve` listens on."""
        if self.base_url is not None:
            return str(self.base_url).rstrip("/")
        host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def link(self, path: str) -> str:
        """Absolute URL of a path on this site."""
        return f"{self.public_url}/{path.lstrip('/')}"


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _FieldProblem(ValueError):
    """A check across fields that blames one of them (pydantic would blame the whole model)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


SECRET_FIELDS = frozenset(
    name for name, info in Settings.model_fields.items() if info.annotation is SecretStr
)


def _shown(field: str, value: object) -> str:
    """A setting's value as an error message may show it: never a secret, no URL password."""
    if field in SECRET_FIELDS:
        return "(hidden)"
    return repr(mask_url(value)) if isinstance(value, str) else repr(value)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and `.env`), naming the bad variable on error
    and never showing a secret's value."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, _FieldProblem):
                problems.append(f"{ENV_PREFIX}{cause.field.upper()}: {cause.reason}")
                continue
            field = ".".join(str(part) for part in error["loc"])
            message = mask_url(error["msg"])
            if field in SECRET_FIELDS:
                problems.append(f"{ENV_PREFIX}{field.upper()}: {message}")
                continue
            shown = _shown(field, error.get("input"))
            problems.append(f"{ENV_PREFIX}{field.upper()}={shown}: {message}")
        # from None: a chained ValidationError would print every input, secrets included.
        raise ConfigurationError("; ".join(problems)) from None

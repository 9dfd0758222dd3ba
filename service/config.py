"""Settings: every knob an operator turns, read once from the environment.

Owns the `Settings` class. `cli` and `web.create_app` build one instance and pass it down;
no module keeps a settings object of its own, so tests hand in plain keyword arguments.
Imports nothing else from the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import ConfigurationError

ENV_PREFIX = "PARTNERPOST_"


class Settings(BaseSettings):
    """Validated configuration; each field maps to `PARTNERPOST_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/partnerpost.sqlite3",
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8000"),
        description="Public address; every link in feeds and mails starts with it.",
    )
    feeds_dir: Path = Field(default=Path("./feeds"), description="Where feed files are written.")
    admin_token: str = Field(
        default="", description="Bearer token of the admin API; empty disables the admin API."
    )
    site_title: str = Field(
        default="",
        description="Feed and page title; empty uses the heading of the imported listing.",
    )
    feed_size: int = Field(default=50, ge=1, le=1000, description="Articles in each feed.")
    feed_max_age: int = Field(
        default=300, ge=0, description="Cache-Control max-age of feed responses, in seconds."
    )
    feeds_check_seconds: int = Field(
        default=30, ge=1, description="How often the scheduler checks whether feeds are stale."
    )

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                f"{value!r} is not supported: use sqlite+aiosqlite:///PATH "
                "or postgresql+asyncpg://USER@HOST/DB"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _no_query(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if value.query or value.fragment:
            raise ValueError(f"{str(value)!r} must not carry a query or fragment")
        return value

    @property
    def public_url(self) -> str:
        """Base URL without a trailing slash, for joining paths onto."""
        return str(self.base_url).rstrip("/")

    def link(self, path: str) -> str:
        """Absolute URL of a path on this site."""
        return f"{self.public_url}/{path.lstrip('/')}"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and `.env`), naming the bad variable on error."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            problems.append(f"{ENV_PREFIX}{field.upper()}={error.get('input')!r}: {error['msg']}")
        raise ConfigurationError("; ".join(problems)) from exc

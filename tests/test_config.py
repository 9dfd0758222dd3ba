"""Settings: read from PARTNERPOST_* variables, loud about bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import load_settings
from service.errors import ConfigurationError


def test_defaults_serve_the_embedded_setup(monkeypatch):
    for name in ("DATABASE_URL", "BASE_URL", "FEEDS_DIR", "ADMIN_TOKEN", "SITE_TITLE"):
        monkeypatch.delenv(f"PARTNERPOST_{name}", raising=False)
    settings = load_settings(_env_file=None)
    assert settings.database_url == "sqlite+aiosqlite:///./var/partnerpost.sqlite3"
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.feeds_dir is None  # the feeds live in the store; no export folder
    assert settings.admin_token.get_secret_value() == ""


def test_environment_variables_with_prefix_are_read(monkeypatch):
    monkeypatch.setenv("PARTNERPOST_BASE_URL", "https://news.example.org/partner/")
    monkeypatch.setenv("PARTNERPOST_SITE_TITLE", "Partnerschaften")
    settings = load_settings(_env_file=None)
    assert (
        settings.link("/feeds/artikel.xml") == "https://news.example.org/partner/feeds/artikel.xml"
    )
    assert settings.site_title == "Partnerschaften"


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv("PARTNERPOST_SITE_TITLE", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("PARTNERPOST_SITE_TITLE=Aus der Datei\n", encoding="utf-8")
    assert load_settings(_env_file=env_file).site_title == "Aus der Datei"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PARTNERPOST_DATABASE_URL", "mysql://db/x", "is not supported"),
        ("PARTNERPOST_BASE_URL", "not a url", "PARTNERPOST_BASE_URL='not a url'"),
        ("PARTNERPOST_BASE_URL", "https://x.org/?a=1", "must not carry a query"),
        ("PARTNERPOST_FEED_SIZE", "0", "PARTNERPOST_FEED_SIZE='0'"),
    ],
)
def test_bad_values_name_the_variable_and_value(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=message.replace("?", r"\?")) as error:
        load_settings(_env_file=None)
    assert variable in str(error.value)


def test_configuration_error_names_the_variable_and_hides_every_secret(monkeypatch):
    monkeypatch.setenv("PARTNERPOST_ENVIRONMENT", "production")
    monkeypatch.setenv("PARTNERPOST_ADMIN_TOKEN", "admin-token-value-4711")
    monkeypatch.setenv("PARTNERPOST_SMTP_PASSWORD", "smtp-password-value-4711")
    monkeypatch.setenv("PARTNERPOST_SECRET_KEY", "too-short-secret-4711")
    with pytest.raises(ConfigurationError) as error:
        load_settings(_env_file=None)
    message = str(error.value)
    assert message.startswith("PARTNERPOST_SECRET_KEY: ")
    assert "4711" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_database_url_password_is_never_echoed(monkeypatch):
    monkeypatch.setenv(
        "PARTNERPOST_DATABASE_URL", "mysql://partnerpost:db-pass-4711@db/partnerpost"
    )
    with pytest.raises(ConfigurationError) as error:
        load_settings(_env_file=None)
    assert "db-pass-4711" not in str(error.value)
    assert "mysql://partnerpost:***@db/partnerpost" in str(error.value)


def test_secrets_do_not_show_in_the_settings_repr(monkeypatch):
    monkeypatch.setenv("PARTNERPOST_ADMIN_TOKEN", "admin-token-value-4711")
    monkeypatch.setenv("PARTNERPOST_SMTP_PASSWORD", "smtp-password-value-4711")
    monkeypatch.setenv("PARTNERPOST_DATABASE_URL", "postgresql+asyncpg://pp:db-pass-4711@db/pp")
    settings = load_settings(_env_file=None)
    assert "4711" not in repr(settings)
    assert settings.admin_token.get_secret_value() == "admin-token-value-4711"


def test_public_url_follows_host_and_port_unless_base_url_is_set(monkeypatch):
    monkeypatch.delenv("PARTNERPOST_BASE_URL", raising=False)
    monkeypatch.setenv("PARTNERPOST_PORT", "8300")
    assert load_settings(_env_file=None).link("feeds/artikel.xml") == (
        "http://127.0.0.1:8300/feeds/artikel.xml"
    )
    assert load_settings(_env_file=None, host="0.0.0.0").public_url == "http://127.0.0.1:8300"
    monkeypatch.setenv("PARTNERPOST_BASE_URL", "https://news.example.org/")
    assert load_settings(_env_file=None).public_url == "https://news.example.org"


def test_feeds_export_folder_is_optional_and_empty_means_none(monkeypatch):
    monkeypatch.setenv("PARTNERPOST_FEEDS_DIR", "")
    assert load_settings(_env_file=None).feeds_dir is None
    monkeypatch.setenv("PARTNERPOST_FEEDS_DIR", "/srv/feeds")
    assert load_settings(_env_file=None).feeds_dir == Path("/srv/feeds")

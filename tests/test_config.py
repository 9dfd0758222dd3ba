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
    assert settings.feeds_dir == Path("feeds")
    assert settings.admin_token == ""


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

"""`partnerpost serve` as operators run it: no token in the access log, no serving beyond
this machine with the placeholder secret, X-Forwarded-For only from named proxies."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from service import subscribers
from service.config import PLACEHOLDER_SECRET, Settings

from .helpers import (
    environment,
    free_port,
    partnerpost,
    serve,
    sqlite_only,
    store_env,
    subscribe,
    wait_until,
)

SECRET = "serve-test-secret-0123456789abcdefghijkl"


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return environment(
        {
            **store_env(settings),
            "PARTNERPOST_OUTBOX_DIR": str(settings.feeds_dir.parent / "outbox"),
            "PARTNERPOST_SECRET_KEY": SECRET,
            **extra,
        }
    )


def _serve(settings: Settings, **env: str):
    """`partnerpost serve` for `settings` with this module's secret (`env` may override)."""
    return serve(_env(settings, **env), settings.feeds_dir.parent)


def _run(settings: Settings, *args: str, **env: str) -> tuple[int, str]:
    """`partnerpost ARGS` to its end: the exit code and what it wrote to stderr."""
    result = partnerpost(*args, env=_env(settings, **env), cwd=settings.feeds_dir.parent)
    return result.returncode, result.stderr.decode()


# --- finding 10: no token in the access log -------------------------------------------


async def test_link_tokens_never_reach_the_access_log(settings, sessions):
    (address,) = await subscribe(sessions, "rathaus@leipzig.de", name="Stadt Leipzig")
    tokens = subscribers.Tokens(settings.model_copy(update={"secret_key": SecretStr(SECRET)}))
    unsubscribe, preferences = tokens.unsubscribe(address), tokens.preferences(address)

    with _serve(settings) as served:
        async with httpx.AsyncClient(base_url=served.url) as client:
            assert (await client.get(f"/einstellungen/{preferences}")).status_code == 200
            assert (await client.get(f"/abmelden/{unsubscribe}?x=1")).status_code == 200
            assert (await client.post(f"/abmelden/{unsubscribe}")).status_code == 200
            assert (await client.get("/bestaetigen/not-a-token")).status_code == 400

            async def feed_served() -> bool:
                return (await client.get("/feeds/artikel.atom")).status_code == 200

            await wait_until(feed_served, 20, 0.1, what="the main feed")

    log = served.text()
    # One line per page request (not a second one from uvicorn), none for a served feed
    # (a 404 before the feed was loaded went to the app and is logged).
    assert log.count('"GET /einstellungen/[token] HTTP/1.1" 200') == 1
    assert '"GET /feeds/artikel.atom HTTP/1.1" 200' not in log
    assert '"GET /abmelden/[token]?x=1 HTTP/1.1" 200' in log
    assert '"POST /abmelden/[token] HTTP/1.1" 200' in log
    assert '"GET /bestaetigen/[token] HTTP/1.1" 400' in log
    for secret in (unsubscribe, preferences, unsubscribe.split(".")[0], "not-a-token"):
        assert secret not in log


# --- finding 11: the placeholder secret ------------------------------------------------


def test_placeholder_secret_is_refused_on_an_address_others_can_reach(plain_settings):
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        port = str(free_port())
        code, stderr = _run(
            plain_settings,
            "serve",
            "--host",
            host,
            "--port",
            port,
            PARTNERPOST_SECRET_KEY=PLACEHOLDER_SECRET,
        )
        assert code == 2, (host, stderr)
        assert "PARTNERPOST_SECRET_KEY is the development placeholder" in stderr
        assert f"refusing to serve on {host!r}" in stderr


@sqlite_only
def test_placeholder_secret_is_warned_about_at_every_start(settings):
    env = {"PARTNERPOST_SECRET_KEY": PLACEHOLDER_SECRET}
    with _serve(settings, **env) as served:
        assert httpx.get(f"{served.url}/healthz").status_code == 200
    assert "WARNING service.cli: PARTNERPOST_SECRET_KEY is the development placeholder" in (
        served.text()
    )
    code, stderr = _run(settings, "db", "upgrade", **env)
    assert code == 0
    assert "WARNING" in stderr and "development placeholder" in stderr

    with _serve(settings) as served:  # a real key: no warning
        pass
    assert "placeholder" not in served.text()


# --- finding 12: X-Forwarded-For only from the proxies named --------------------------


def _subscribe(url: str, n: int, forwarded_for: str) -> int:
    body = {"name": "Stadt Leipzig", "email": f"a{n}@leipzig.de"}
    headers = {"X-Forwarded-For": forwarded_for}
    return httpx.post(f"{url}/api/abonnements", json=body, headers=headers).status_code


def test_a_local_hop_cannot_choose_the_client_address(settings):
    env = {"PARTNERPOST_CONFIRMATIONS_PER_CLIENT": "2"}
    with _serve(settings, **env) as served:
        answers = [_subscribe(served.url, n, f"198.51.100.{n}") for n in range(3)]
    assert answers == [202, 202, 429]


def test_trusted_proxies_give_the_right_most_untrusted_address(settings):
    env = {
        "PARTNERPOST_CONFIRMATIONS_PER_CLIENT": "2",
        "PARTNERPOST_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8",
    }
    with _serve(settings, **env) as served:
        # A client may put anything on the left; the proxies append what they saw.
        spoofed = [
            _subscribe(served.url, n, f"198.51.100.{n}, 203.0.113.7, 10.1.2.3") for n in range(3)
        ]
        other_client = _subscribe(served.url, 9, "198.51.100.1, 203.0.113.8, 10.1.2.3")
    assert spoofed == [202, 202, 429]
    assert other_client == 202


def test_trusted_proxies_that_are_no_addresses_are_a_clear_error(plain_settings):
    code, stderr = _run(
        plain_settings, "db", "upgrade", PARTNERPOST_TRUSTED_PROXIES="127.0.0.1, proxy.local"
    )
    assert code == 2
    assert "PARTNERPOST_TRUSTED_PROXIES" in stderr and "'proxy.local'" in stderr

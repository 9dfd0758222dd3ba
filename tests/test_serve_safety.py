"""`partnerpost serve` as operators run it: no token in the access log, no serving beyond
this machine with the placeholder secret, X-Forwarded-For only from named proxies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from service import store, subscribers
from service.config import PLACEHOLDER_SECRET, Settings

PARTNERPOST = str(Path(sys.executable).parent / "partnerpost")
SECRET = "serve-test-secret-0123456789abcdefghijkl"
sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERPOST_")}
    env.update(
        PARTNERPOST_DATABASE_URL=settings.database_url,
        PARTNERPOST_FEEDS_DIR=str(settings.feeds_dir),
        PARTNERPOST_OUTBOX_DIR=str(settings.feeds_dir.parent / "outbox"),
        PARTNERPOST_SECRET_KEY=SECRET,
    )
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    url: str
    log: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def serve(settings: Settings, *args: str, **env: str) -> Iterator[Served]:
    """`partnerpost serve` in a subprocess on a free loopback port; its log is kept."""
    port = _free_port()
    log = settings.feeds_dir.parent / f"serve-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [PARTNERPOST, "serve", "--port", str(port), *args],
            env=_env(settings, **env),
            cwd=settings.feeds_dir.parent,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    served = Served(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{served.url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, served.text()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        yield served
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- finding 10: no token in the access log -------------------------------------------


async def test_link_tokens_never_reach_the_access_log(settings, sessions):
    async with sessions() as session, session.begin():
        subscriber = await store.create_subscriber(
            session, name="Stadt Leipzig", frequency=store.Frequency.WEEKLY
        )
        address = await store.add_address(
            session, subscriber, "rathaus@leipzig.de", store.AddressStatus.ACTIVE
        )
    tokens = subscribers.Tokens(settings.model_copy(update={"secret_key": SecretStr(SECRET)}))
    unsubscribe, preferences = tokens.unsubscribe(address), tokens.preferences(address)

    with serve(settings) as served:
        async with httpx.AsyncClient(base_url=served.url) as client:
            assert (await client.get(f"/einstellungen/{preferences}")).status_code == 200
            assert (await client.get(f"/abmelden/{unsubscribe}?x=1")).status_code == 200
            assert (await client.post(f"/abmelden/{unsubscribe}")).status_code == 200
            assert (await client.get("/bestaetigen/not-a-token")).status_code == 400

    log = served.text()
    assert '"GET /einstellungen/[token] HTTP/1.1" 200' in log
    assert '"GET /abmelden/[token]?x=1 HTTP/1.1" 200' in log
    assert '"POST /abmelden/[token] HTTP/1.1" 200' in log
    assert '"GET /bestaetigen/[token] HTTP/1.1" 400' in log
    for secret in (unsubscribe, preferences, unsubscribe.split(".")[0], "not-a-token"):
        assert secret not in log


# --- finding 11: the placeholder secret ------------------------------------------------


@sqlite_only
def test_placeholder_secret_is_refused_on_an_address_others_can_reach(settings):
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        result = subprocess.run(
            [PARTNERPOST, "serve", "--host", host, "--port", str(_free_port())],
            env=_env(settings, PARTNERPOST_SECRET_KEY=PLACEHOLDER_SECRET),
            cwd=settings.feeds_dir.parent,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (host, result.stderr)
        assert "PARTNERPOST_SECRET_KEY is the development placeholder" in result.stderr
        assert f"refusing to serve on {host!r}" in result.stderr


@sqlite_only
def test_placeholder_secret_is_warned_about_at_every_start(settings):
    env = {"PARTNERPOST_SECRET_KEY": PLACEHOLDER_SECRET}
    with serve(settings, **env) as served:
        assert httpx.get(f"{served.url}/healthz").status_code == 200
    assert "WARNING service.cli: PARTNERPOST_SECRET_KEY is the development placeholder" in (
        served.text()
    )
    upgrade = subprocess.run(
        [PARTNERPOST, "db", "upgrade"],
        env=_env(settings, **env),
        cwd=settings.feeds_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert upgrade.returncode == 0
    assert "WARNING" in upgrade.stderr and "development placeholder" in upgrade.stderr

    with serve(settings) as served:  # a real key: no warning
        pass
    assert "placeholder" not in served.text()


# --- finding 12: X-Forwarded-For only from the proxies named --------------------------


def _subscribe(url: str, n: int, forwarded_for: str) -> int:
    body = {"name": "Stadt Leipzig", "email": f"a{n}@leipzig.de"}
    headers = {"X-Forwarded-For": forwarded_for}
    return httpx.post(f"{url}/api/abonnements", json=body, headers=headers).status_code


def test_a_local_hop_cannot_choose_the_client_address(settings):
    env = {"PARTNERPOST_CONFIRMATIONS_PER_CLIENT": "2"}
    with serve(settings, **env) as served:
        answers = [_subscribe(served.url, n, f"198.51.100.{n}") for n in range(3)]
    assert answers == [202, 202, 429]


def test_trusted_proxies_give_the_right_most_untrusted_address(settings):
    env = {
        "PARTNERPOST_CONFIRMATIONS_PER_CLIENT": "2",
        "PARTNERPOST_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8",
    }
    with serve(settings, **env) as served:
        # A client may put anything on the left; the proxies append what they saw.
        spoofed = [
            _subscribe(served.url, n, f"198.51.100.{n}, 203.0.113.7, 10.1.2.3") for n in range(3)
        ]
        other_client = _subscribe(served.url, 9, "198.51.100.1, 203.0.113.8, 10.1.2.3")
    assert spoofed == [202, 202, 429]
    assert other_client == 202


@sqlite_only
def test_trusted_proxies_that_are_no_addresses_are_a_clear_error(settings):
    result = subprocess.run(
        [PARTNERPOST, "db", "upgrade"],
        env=_env(settings, PARTNERPOST_TRUSTED_PROXIES="127.0.0.1, proxy.local"),
        cwd=settings.feeds_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PARTNERPOST_TRUSTED_PROXIES" in result.stderr and "'proxy.local'" in result.stderr

"""Operators' digest commands as real subprocesses against a real SMTP server."""

from __future__ import annotations

import asyncio
import collections
import signal
from datetime import UTC, datetime, timedelta

import pytest

from service import ingest, store
from service.config import Settings

from .conftest import DEMO
from .test_cli import PARTNERPOST
from .test_cli import _env as cli_env
from .test_digest import LEIPZIG_FIRST, next_monday_8am


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of `test_cli` plus the mail settings."""
    env = cli_env(settings)
    env.update(
        PARTNERPOST_MAILER=settings.mailer,
        PARTNERPOST_SMTP_HOST=settings.smtp_host,
        PARTNERPOST_SMTP_PORT=str(settings.smtp_port),
        PARTNERPOST_MAIL_FROM=settings.mail_from,
        PARTNERPOST_SECRET_KEY=settings.secret_key.get_secret_value(),
        PARTNERPOST_DIGEST_RETRY_BASE_SECONDS="0",
        PARTNERPOST_OUTBOX_DIR=str(settings.feeds_dir.parent / "outbox"),
    )
    env.update(extra)
    return env


async def cli(settings: Settings, *args: str, **env: str) -> tuple[int, str, str]:
    """Run `partnerpost ARGS` without blocking the event loop the SMTP server runs in."""
    process = await asyncio.create_subprocess_exec(
        PARTNERPOST,
        *args,
        env=_env(settings, **env),
        cwd=settings.feeds_dir.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


CSV = (
    "name,email,ags,bundesland,partner,frequency,topics\n"
    "Stadt Leipzig,rathaus@leipzig.de,14713000,Sachsen,Kyjiw,weekly,\n"
    "Stadt Borna,rathaus@borna.de,,,Irpin,,\n"
    "Stadt Kaputt,nicht-gueltig,,,,,\n"
)


async def test_import_run_and_rerun_by_hand(mail_settings, smtp_server, tmp_path):
    csv_file = tmp_path / "kommunen.csv"
    csv_file.write_text(CSV, encoding="utf-8")
    at = next_monday_8am().isoformat(timespec="minutes")

    assert (await cli(mail_settings, "ingest", str(DEMO)))[0] == 0
    code, out, err = await cli(mail_settings, "subscribers", "import", str(csv_file))
    assert code == 1 and "2 added, 0 unchanged, 1 rejected" in out
    assert "line 4: email" in err

    code, out, _ = await cli(mail_settings, "digest", "run", "--at", at, "--dry-run")
    assert code == 0 and "2 digest(s) would be sent" in out
    assert smtp_server.handler.received == []

    code, out, err = await cli(mail_settings, "digest", "run", "--at", at)
    assert code == 0, err
    assert "sent 2, skipped 0, failed 0" in out
    code, out, _ = await cli(mail_settings, "digest", "run", "--at", at)
    assert "sent 0" in out
    assert sorted(r.recipients[0] for r in smtp_server.handler.received) == [
        "rathaus@borna.de",
        "rathaus@leipzig.de",
    ]


async def test_subscribers_add_list_remove(mail_settings, smtp_server):
    assert (await cli(mail_settings, "db", "upgrade"))[0] == 0  # add creates no database
    code, out, _ = await cli(
        mail_settings,
        "subscribers",
        "add",
        "Stadt Leipzig",
        "rathaus@leipzig.de",
        "--partner",
        "Kyjiw",
        "--frequency",
        "monthly",
        "--topic",
        "Energie",
    )
    assert code == 0 and "subscribed for Stadt Leipzig (monthly)" in out
    again = await cli(mail_settings, "subscribers", "add", "Stadt Leipzig", "rathaus@leipzig.de")
    assert again[0] == 1 and "already subscribed" in again[2]
    bad = await cli(mail_settings, "subscribers", "add", "Stadt X", "x@x.de", "--ags", "1")
    assert bad[0] == 2 and "ags" in bad[2]

    code, out, _ = await cli(mail_settings, "subscribers", "list")
    assert "Stadt Leipzig" in out and "rathaus@leipzig.de" in out and "active" in out

    assert (await cli(mail_settings, "subscribers", "remove", "rathaus@leipzig.de"))[0] == 0
    assert (await cli(mail_settings, "subscribers", "remove", "Stadt Leipzig"))[0] == 0
    missing = await cli(mail_settings, "subscribers", "remove", "Stadt Leipzig")
    assert missing[0] == 1
    assert smtp_server.handler.received == []


async def test_preview_writes_html_and_eml_and_sends_nothing(mail_settings, smtp_server, tmp_path):
    assert (await cli(mail_settings, "ingest", str(DEMO)))[0] == 0
    await cli(
        mail_settings,
        "subscribers",
        "add",
        "Stadt Leipzig",
        "rathaus@leipzig.de",
        "--partner",
        "Kyjiw",
    )
    out_dir = tmp_path / "vorschau"

    code, out, err = await cli(
        mail_settings,
        "digest",
        "preview",
        "--to",
        "rathaus@leipzig.de",
        "--at",
        next_monday_8am().strftime("%Y-%m-%dT%H:%M"),
        "--out",
        str(out_dir),
    )

    assert code == 0, err
    assert "10 article(s)" in out
    html = (out_dir / "digest-rathaus-leipzig-de.html").read_text(encoding="utf-8")
    assert LEIPZIG_FIRST in html
    assert (out_dir / "digest-rathaus-leipzig-de.eml").read_bytes().startswith(b"From: ")
    assert smtp_server.handler.received == []
    missing = await cli(mail_settings, "digest", "preview", "--to", "x@y.de")
    assert missing[0] == 2 and "no subscribed address" in missing[2]


async def _many_addresses(sessions, count: int, confirmed: datetime | None = None) -> list[str]:
    emails = [f"kommune{i:03d}@example.org" for i in range(count)]
    async with sessions() as session, session.begin():
        for i, email in enumerate(emails):
            subscriber = await store.create_subscriber(
                session, name=f"Gemeinde {i:03d}", frequency=store.Frequency.WEEKLY
            )
            await store.add_address(
                session, subscriber, email, store.AddressStatus.ACTIVE, now=confirmed
            )
    return emails


async def test_killed_run_is_completed_by_the_rerun_without_duplicates(
    mail_settings, smtp_server, sessions
):
    await ingest.save(sessions, ingest.parse_listing_text(DEMO.read_text(encoding="utf-8")))
    emails = await _many_addresses(sessions, 200)
    smtp_server.handler.slow_seconds = 0.02
    at = next_monday_8am().isoformat()

    process = await asyncio.create_subprocess_exec(
        PARTNERPOST,
        "digest",
        "run",
        "--at",
        at,
        env=_env(mail_settings),
        cwd=mail_settings.feeds_dir.parent,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    for _ in range(6000):
        if len(smtp_server.handler.received) >= 100:
            break
        await asyncio.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    first_run = len(smtp_server.handler.received)
    assert 100 <= first_run < 200, "the kill came too late to test anything"

    code, _, err = await cli(mail_settings, "digest", "run", "--at", at)

    assert code == 0, err
    per_address = collections.Counter(r.recipients[0] for r in smtp_server.handler.received)
    assert set(per_address) == set(emails)
    doubled = [email for email, n in per_address.items() if n > 1]
    assert len(doubled) <= 1 and all(per_address[e] == 2 for e in doubled)
    async with sessions() as session:
        counts = await store.counts_by_status(session, store.Delivery)
    assert counts == {"sent": 200}


async def test_worker_catches_up_a_missed_period_once_and_stops_on_sigterm(
    mail_settings, smtp_server, sessions
):
    await ingest.save(sessions, ingest.parse_listing_text(DEMO.read_text(encoding="utf-8")))
    three_weeks_ago = datetime.now(UTC) - timedelta(days=21)
    await _many_addresses(sessions, 3, confirmed=three_weeks_ago)

    process = await asyncio.create_subprocess_exec(
        PARTNERPOST,
        "worker",
        env=_env(mail_settings),
        cwd=mail_settings.feeds_dir.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        for _ in range(3000):
            if len(smtp_server.handler.received) >= 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.5)  # a second tick of the retry job would send again here
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, output.decode()
    per_address = collections.Counter(r.recipients[0] for r in smtp_server.handler.received)
    assert sorted(per_address.values()) == [1, 1, 1]
    assert "stopped" in output.decode()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_at_without_offset_is_berlin_time_and_bad_at_is_refused(mail_settings, smtp_server):
    assert (await cli(mail_settings, "db", "upgrade"))[0] == 0  # digest run creates none
    bad = await cli(mail_settings, "digest", "run", "--at", "nächsten Montag")
    assert bad[0] == 2 and "no ISO 8601" in bad[2]
    code, out, _ = await cli(mail_settings, "digest", "run", "--at", "2026-11-23T07:00")
    assert code == 0 and "weekly:2026-11-23T06:00Z" in out

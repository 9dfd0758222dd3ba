"""Operators' digest commands as real subprocesses against a real SMTP server."""

from __future__ import annotations

import asyncio
import collections
import signal
from datetime import UTC, datetime, timedelta

from service import store

from .helpers import (
    DEMO,
    LEIPZIG_FIRST,
    cli,
    import_demo,
    next_monday_8am,
    sqlite_only,
    start,
    subscribe,
)

ADD_LEIPZIG = ("subscribers", "add", "Stadt Leipzig", "rathaus@leipzig.de", "--partner", "Kyjiw")
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
        mail_settings, *ADD_LEIPZIG, "--frequency", "monthly", "--topic", "Energie"
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
    await cli(mail_settings, *ADD_LEIPZIG)
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


async def test_killed_run_is_completed_by_the_rerun_without_duplicates(
    mail_settings, smtp_server, sessions
):
    await import_demo(sessions)
    emails = [f"kommune{i:03d}@example.org" for i in range(200)]
    await subscribe(sessions, *emails)
    smtp_server.handler.slow_seconds = 0.02
    at = next_monday_8am().isoformat()

    process = await start(
        mail_settings, "digest", "run", "--at", at, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await smtp_server.handler.wait_for(100)
    finally:
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
    await import_demo(sessions)
    three_weeks_ago = datetime.now(UTC) - timedelta(days=21)
    await subscribe(
        sessions, "a@eins.example", "b@zwei.example", "c@drei.example", now=three_weeks_ago
    )

    process = await start(
        mail_settings, "worker", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        await smtp_server.handler.wait_for(3)
        await asyncio.sleep(1.5)  # a second tick of the retry job would send again here
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, output.decode()
    per_address = collections.Counter(r.recipients[0] for r in smtp_server.handler.received)
    assert sorted(per_address.values()) == [1, 1, 1]
    assert "stopped" in output.decode()


@sqlite_only
async def test_at_without_offset_is_berlin_time_and_bad_at_is_refused(mail_settings, smtp_server):
    assert (await cli(mail_settings, "db", "upgrade"))[0] == 0  # digest run creates none
    bad = await cli(mail_settings, "digest", "run", "--at", "nächsten Montag")
    assert bad[0] == 2 and "no ISO 8601" in bad[2]
    code, out, _ = await cli(mail_settings, "digest", "run", "--at", "2026-11-23T07:00")
    assert code == 0 and "weekly:2026-11-23T06:00Z" in out

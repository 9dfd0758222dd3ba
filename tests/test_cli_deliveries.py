"""`partnerpost deliveries` as real subprocesses against a real SMTP server."""

from __future__ import annotations

import pytest

from service import store
from service.clock import BERLIN

from .helpers import DEMO, cli, next_monday_8am

CSV = (
    "name,email,ags,bundesland,partner,frequency,topics\n"
    "Stadt Leipzig,rathaus@leipzig.de,14713000,Sachsen,Kyjiw,weekly,\n"
    "Stadt Borna,rathaus@borna.de,,,Irpin,,\n"
    "Stadt Kaputt,nicht-gueltig,,,,,\n"
)
WIDE = {"COLUMNS": "200", "PARTNERPOST_DIGEST_RETRY_BASE_SECONDS": "3600"}


async def _ids(sessions) -> dict[str, int]:
    async with sessions() as session:
        rows = await store.find_deliveries(session, store.DeliveryFilter(), limit=None)
    return {row.email: row.id for row in rows}


@pytest.mark.smtp_replies("550", "451")
async def test_list_show_and_retry_a_failed_and_a_retrying_delivery(
    mail_settings, smtp_server, sessions, tmp_path
):
    csv_file = tmp_path / "kommunen.csv"
    csv_file.write_text(CSV, encoding="utf-8")
    moment = next_monday_8am()
    at = moment.isoformat(timespec="minutes")
    period = f"weekly:{moment.astimezone(BERLIN).date().isoformat()}"
    assert (await cli(mail_settings, "ingest", str(DEMO)))[0] == 0
    assert (await cli(mail_settings, "subscribers", "import", str(csv_file)))[0] == 1
    code, out, _ = await cli(mail_settings, "digest", "run", "--at", at, **WIDE)
    assert code == 2 and "failed 1, retrying 1" in out  # nothing delivered

    code, out, _ = await cli(mail_settings, "deliveries", "periods", **WIDE)
    assert code == 0 and period in out
    code, out, _ = await cli(mail_settings, "deliveries", "list", **WIDE)
    assert code == 0 and "deliveries 1–2 of 2" in out
    assert "rathaus@leipzig.de" in out and "failed" in out and "550 scripted failure" in out
    assert "rathaus@borna.de" in out and "retrying" in out and "451 scripted failure" in out
    code, out, _ = await cli(mail_settings, "deliveries", "list", "--status", "failed", **WIDE)
    assert "rathaus@leipzig.de" in out and "rathaus@borna.de" not in out
    code, out, _ = await cli(mail_settings, "deliveries", "list", "--address", "BORNA", **WIDE)
    assert "rathaus@borna.de" in out and "rathaus@leipzig.de" not in out
    code, out, _ = await cli(
        mail_settings, "deliveries", "list", "--period", period, "--limit", "1", **WIDE
    )
    assert code == 0 and "deliveries 1–1 of 2; --offset 1 for more" in out
    code, out, _ = await cli(mail_settings, "deliveries", "list", "--period", "weekly:2020-01-06")
    assert code == 0 and "no deliveries match" in out
    code, _, err = await cli(mail_settings, "deliveries", "list", "--period", "Woche 48")
    assert code == 2 and "FREQUENCY:YYYY-MM-DD" in err
    code, _, err = await cli(mail_settings, "deliveries", "list", "--status", "lost")
    assert code == 2 and "retrying" in err

    code, out, _ = await cli(mail_settings, "deliveries", "show", "rathaus@leipzig.de", **WIDE)
    assert code == 0 and "rathaus@leipzig.de: active (Stadt Leipzig, weekly)" in out
    assert period in out and "failed" in out and "550 scripted failure" in out
    code, _, err = await cli(mail_settings, "deliveries", "show", "niemand@example.org")
    assert code == 1 and "no address" in err

    ids = await _ids(sessions)
    code, out, _ = await cli(mail_settings, "deliveries", "retry", "--period", period)
    assert code == 0 and "retried 1, already due 0, refused 0" in out
    code, out, _ = await cli(
        mail_settings, "deliveries", "retry", str(ids["rathaus@leipzig.de"]), **WIDE
    )
    assert code == 0 and "retried 1" in out
    code, out, _ = await cli(mail_settings, "digest", "run", "--at", at, **WIDE)
    assert code == 0 and "sent 2" in out

    code, out, err = await cli(
        mail_settings, "deliveries", "retry", str(ids["rathaus@leipzig.de"]), "424242"
    )
    assert code == 1 and "refused 2" in out
    assert "rathaus@leipzig.de" in err and "never sent twice" in err and "no such" in err
    code, out, err = await cli(mail_settings, "deliveries", "retry", "--period", "daily:2020-01-01")
    assert code == 1 and "no period" in err
    code, _, err = await cli(mail_settings, "deliveries", "retry")
    assert code == 2 and "ids or --period" in err
    assert sorted(r.recipients[0] for r in smtp_server.handler.received) == [
        "rathaus@borna.de",
        "rathaus@leipzig.de",
    ]

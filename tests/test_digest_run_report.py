"""`digest run` counts rows, not attempts, and says when it could not deliver."""

from __future__ import annotations

import pytest

from .helpers import digest_run, free_port, import_demo, sqlite_only, subscribe


async def _demo_and_addresses(sessions, count: int) -> list[str]:
    """The demo articles, and `count` addresses of one municipality subscribed weekly."""
    await import_demo(sessions)
    emails = [f"stelle{i}@gemeinde.example" for i in range(count)]
    await subscribe(sessions, *emails)
    return emails


def _last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


@sqlite_only
async def test_an_unreachable_relay_exits_2_and_says_nothing_could_be_delivered(
    mail_settings, smtp_server, sessions
):
    await _demo_and_addresses(sessions, 4)

    code, out, err = await digest_run(
        mail_settings,
        PARTNERPOST_SMTP_PORT=str(free_port()),
        PARTNERPOST_DIGEST_RETRY_BASE_SECONDS="600",
    )

    assert code == 2, out + err
    last = _last_line(out)
    assert last.startswith("sent 0, skipped 0, failed 0, retrying 4, uncertain 0 "), last
    assert "nothing could be delivered" in last
    assert "Traceback" not in err


@sqlite_only
async def test_rows_out_of_attempts_count_once_each_as_failed(mail_settings, smtp_server, sessions):
    await _demo_and_addresses(sessions, 3)

    code, out, _ = await digest_run(
        mail_settings,
        PARTNERPOST_SMTP_PORT=str(free_port()),
        PARTNERPOST_DIGEST_MAX_ATTEMPTS="3",
    )

    assert code == 1, out
    last = _last_line(out)
    assert last.startswith("sent 0, skipped 0, failed 3, retrying 0, uncertain 0 "), last
    assert "3 digest(s) failed permanently" in last


@sqlite_only
@pytest.mark.smtp_replies("451", "451")
async def test_a_row_retried_within_the_run_counts_once_as_sent(
    mail_settings, smtp_server, sessions
):
    emails = await _demo_and_addresses(sessions, 2)

    code, out, err = await digest_run(mail_settings)

    assert code == 0, out + err
    assert _last_line(out).startswith("sent 2, skipped 0, failed 0, retrying 0, uncertain 0 ")
    assert smtp_server.handler.attempts == 4
    assert sorted(r.recipients[0] for r in smtp_server.handler.received) == emails


@sqlite_only
@pytest.mark.smtp_replies("550")
async def test_a_permanently_failed_row_exits_1_and_is_named_in_the_last_line(
    mail_settings, smtp_server, sessions
):
    await _demo_and_addresses(sessions, 3)
    await subscribe(sessions, "ohne@stadt.example", name="Stadt Ohne", topics=["Kein Thema"])

    code, out, _ = await digest_run(mail_settings)

    assert code == 1, out
    last = _last_line(out)
    assert last.startswith("sent 2, skipped 1, failed 1, retrying 0, uncertain 0 "), last
    assert "1 digest(s) failed permanently" in last
    assert len(smtp_server.handler.received) == 2

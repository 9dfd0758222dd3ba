"""Confirmation mails go through a durable queue: sent outside the request, retried while
the relay is down, failed for good on a 5xx. Real app over HTTP, real aiosmtpd."""

from __future__ import annotations

import asyncio

import pytest

from service import store, subscribers

from .helpers import (
    RecordingHandler,
    app_client,
    send_confirmations,
    start_relay,
    subscribe,
    wait_until,
    with_smtp,
)

LEIPZIG = {"name": "Stadt Leipzig", "email": "rathaus@leipzig.de", "partner": "Kyjiw"}


async def _queue(sessions) -> list[store.ConfirmationMail]:
    async with sessions() as session:
        return list(await session.scalars(store.select(store.ConfirmationMail)))


async def _request(settings, sessions) -> None:
    """Stadt Leipzig asks to subscribe, as the form does."""
    data = subscribers.SubscriberIn.model_validate(LEIPZIG)
    await subscribers.request_subscription(settings, sessions, data, "127.0.0.1", store.utcnow())


async def test_confirmation_mail_arrives_once_the_relay_is_back(settings, engine, sessions):
    handler = RecordingHandler([])
    relay, port = await start_relay(handler)
    relay.close()
    await relay.wait_closed()  # the relay is down
    down = with_smtp(
        settings,
        "127.0.0.1",
        port,
        digest_retry_base_seconds=1,  # next attempts after 1, 2, 4 ... seconds
        confirmation_send_seconds=1,
    )

    async def tried_and_waiting() -> bool:
        rows = await _queue(sessions)
        return len(rows) == 1 and rows[0].attempts >= 1 and rows[0].status == "pending"

    async def sent() -> bool:
        return [row.status for row in await _queue(sessions)] == ["sent"]

    async with app_client(down) as client:
        answer = await client.post("/api/abonnements", json=LEIPZIG)
        assert answer.status_code == 202
        await wait_until(tried_and_waiting, what="a failed first attempt")
        assert "connection" in (await _queue(sessions))[0].last_reply

        relay, _ = await start_relay(handler, port)  # back on the same port
        try:
            (mail,) = await handler.wait_for(1)
            await wait_until(sent, what="the confirmation mail sent")
        finally:
            relay.close()
            await relay.wait_closed()

    assert mail.recipients == ["rathaus@leipzig.de"]
    assert "/bestaetigen/" in mail.message.get_body(("plain",)).get_content()


async def test_the_answer_does_not_wait_for_the_relay(mail_settings, smtp_server, engine, sessions):
    await subscribe(sessions, "rathaus@borna.de", name="Stadt Borna")
    smtp_server.handler.hold = asyncio.Event()  # the relay takes nothing until released

    async with app_client(mail_settings) as client:
        new = await client.post("/api/abonnements", json=LEIPZIG)
        active = await client.post(
            "/api/abonnements", json={"name": "Stadt Borna", "email": "rathaus@borna.de"}
        )
        # Both answered while the relay still holds the one mail back.
        assert new.status_code == active.status_code == 202
        assert new.json() == active.json()
        assert smtp_server.handler.received == []

        smtp_server.handler.hold.set()
        (mail,) = await smtp_server.handler.wait_for(1)

    assert mail.recipients == ["rathaus@leipzig.de"]


@pytest.mark.smtp_replies("550")
async def test_a_refused_confirmation_mail_fails_and_is_not_retried(
    mail_settings, smtp_server, engine, sessions
):
    async with app_client(mail_settings) as client:
        assert (await client.post("/api/abonnements", json=LEIPZIG)).status_code == 202

        async def failed() -> bool:
            return [row.status for row in await _queue(sessions)] == ["failed"]

        await wait_until(failed, what="the confirmation mail failed")
    again = await send_confirmations(mail_settings, sessions)

    (row,) = await _queue(sessions)
    assert (row.attempts, again.sent, again.failed) == (1, 0, 0)
    assert row.last_reply.startswith("550")
    assert smtp_server.handler.attempts == 1


@pytest.mark.smtp_replies("451", "451")
async def test_a_busy_relay_gets_the_confirmation_mail_on_a_later_attempt(
    mail_settings, smtp_server, engine, sessions
):
    await _request(mail_settings, sessions)

    report = await send_confirmations(mail_settings, sessions)

    assert (report.retrying, report.sent) == (2, 1)
    assert len(smtp_server.handler.received) == 1
    (row,) = await _queue(sessions)
    assert (row.status, row.attempts) == ("sent", 3)


async def test_requests_while_a_mail_waits_queue_no_second_mail(
    mail_settings, smtp_server, engine, sessions
):
    for _ in range(2):
        await _request(mail_settings, sessions)

    await send_confirmations(mail_settings, sessions)

    assert len(smtp_server.handler.received) == 1  # with a link that works for both


async def test_an_address_confirmed_meanwhile_gets_no_mail(
    mail_settings, smtp_server, engine, sessions
):
    await _request(mail_settings, sessions)
    async with sessions() as session, session.begin():
        store.activate(await store.address_by_email(session, LEIPZIG["email"]), store.utcnow())

    report = await send_confirmations(mail_settings, sessions)

    assert (report.skipped, report.sent) == (1, 0)
    assert smtp_server.handler.received == []

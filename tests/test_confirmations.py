"""Confirmation mails go through a durable queue: sent outside the request, retried while
the relay is down, failed for good on a 5xx. Real app over HTTP, real aiosmtpd."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiosmtpd.smtp import SMTP
from pydantic import SecretStr

from service import confirmations, mailer, store, subscribers

from .conftest import RecordingHandler, running_app

LEIPZIG = {"name": "Stadt Leipzig", "email": "rathaus@leipzig.de", "partner": "Kyjiw"}


async def _queue(sessions) -> list[store.ConfirmationMail]:
    async with sessions() as session:
        return list(await session.scalars(store.select(store.ConfirmationMail)))


async def _until(check, patience: float = 30.0) -> None:
    """Wait until `check()` (a coroutine function) is true: the queue runs in the background."""
    for _ in range(int(patience / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the confirmation queue did not get there")


async def _relay(handler: RecordingHandler, port: int = 0) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="smtp.test"), "127.0.0.1", port
    )


async def _send_queue(settings, sessions) -> confirmations.ConfirmationReport:
    transport = mailer.create_transport(settings)
    try:
        return await confirmations.ConfirmationSender(settings, sessions, transport).run()
    finally:
        await transport.close()


async def test_confirmation_mail_arrives_once_the_relay_is_back(settings, engine, sessions):
    handler = RecordingHandler([])
    relay = await _relay(handler)
    port = relay.sockets[0].getsockname()[1]
    relay.close()
    await relay.wait_closed()  # the relay is down
    down = settings.model_copy(
        update={
            "mailer": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_timeout": 5,
            "mail_from": "Kommunalpartnerschaften Ukraine <news@partnerpost.example.org>",
            "secret_key": SecretStr("test-secret-key-0123456789abcdefghijkl"),
            "digest_retry_base_seconds": 1,  # next attempts after 1, 2, 4 ... seconds
            "confirmation_send_seconds": 1,
        }
    )

    async def tried_and_waiting() -> bool:
        rows = await _queue(sessions)
        return len(rows) == 1 and rows[0].attempts >= 1 and rows[0].status == "pending"

    async def sent() -> bool:
        return [row.status for row in await _queue(sessions)] == ["sent"]

    async with running_app(down) as url, httpx.AsyncClient(base_url=url) as client:
        answer = await client.post("/api/abonnements", json=LEIPZIG)
        assert answer.status_code == 202
        await _until(tried_and_waiting)
        assert "connection" in (await _queue(sessions))[0].last_reply

        relay = await _relay(handler, port)  # back on the same port
        try:
            (mail,) = await handler.wait_for(1)
            await _until(sent)
        finally:
            relay.close()
            await relay.wait_closed()

    assert mail.recipients == ["rathaus@leipzig.de"]
    assert "/bestaetigen/" in mail.message.get_body(("plain",)).get_content()


async def test_the_answer_does_not_wait_for_the_relay(mail_settings, smtp_server, engine, sessions):
    async with sessions() as session, session.begin():
        known = await store.create_subscriber(
            session, name="Stadt Borna", frequency=store.Frequency.WEEKLY
        )
        await store.add_address(session, known, "rathaus@borna.de", store.AddressStatus.ACTIVE)
    smtp_server.handler.hold = asyncio.Event()  # the relay takes nothing until released

    async with running_app(mail_settings) as url, httpx.AsyncClient(base_url=url) as client:
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
    async with running_app(mail_settings) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.post("/api/abonnements", json=LEIPZIG)).status_code == 202

        async def failed() -> bool:
            return [row.status for row in await _queue(sessions)] == ["failed"]

        await _until(failed)
    again = await _send_queue(mail_settings, sessions)

    (row,) = await _queue(sessions)
    assert (row.attempts, again.sent, again.failed) == (1, 0, 0)
    assert row.last_reply.startswith("550")
    assert smtp_server.handler.attempts == 1


@pytest.mark.smtp_replies("451", "451")
async def test_a_busy_relay_gets_the_confirmation_mail_on_a_later_attempt(
    mail_settings, smtp_server, engine, sessions
):
    await subscribers.request_subscription(
        mail_settings,
        sessions,
        subscribers.SubscriberIn.model_validate(LEIPZIG),
        "127.0.0.1",
        store.utcnow(),
    )

    report = await _send_queue(mail_settings, sessions)

    assert (report.retrying, report.sent) == (2, 1)
    assert len(smtp_server.handler.received) == 1
    (row,) = await _queue(sessions)
    assert (row.status, row.attempts) == ("sent", 3)


async def test_requests_while_a_mail_waits_queue_no_second_mail(
    mail_settings, smtp_server, engine, sessions
):
    data = subscribers.SubscriberIn.model_validate(LEIPZIG)
    for _ in range(2):
        await subscribers.request_subscription(
            mail_settings, sessions, data, "127.0.0.1", store.utcnow()
        )

    await _send_queue(mail_settings, sessions)

    assert len(smtp_server.handler.received) == 1  # with a link that works for both


async def test_an_address_confirmed_meanwhile_gets_no_mail(
    mail_settings, smtp_server, engine, sessions
):
    await subscribers.request_subscription(
        mail_settings,
        sessions,
        subscribers.SubscriberIn.model_validate(LEIPZIG),
        "127.0.0.1",
        store.utcnow(),
    )
    async with sessions() as session, session.begin():
        store.activate(await store.address_by_email(session, LEIPZIG["email"]), store.utcnow())

    report = await _send_queue(mail_settings, sessions)

    assert (report.skipped, report.sent) == (1, 0)
    assert smtp_server.handler.received == []

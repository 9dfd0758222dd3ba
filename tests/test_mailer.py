"""Mailer: transports against a real aiosmtpd server (pool, rate, TLS, login), DKIM."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import re
import ssl
import subprocess
import time
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path

import dkim
import pytest
from pydantic import SecretStr

from service import mailer
from service.config import Settings

from .helpers import RecordingHandler, start_relay


def _envelope(settings: Settings, n: int, to: str = "rathaus@leipzig.de") -> mailer.Envelope:
    message_id = mailer.message_id(settings, f"test.{n}")
    message = mailer.compose(
        settings,
        to_name="Stadt Leipzig",
        to_address=to,
        subject=f"Test {n} – Übersicht",
        text="Hallo",
        html="<p>Hallo</p>",
        message_id=message_id,
        date=datetime(2026, 11, 23, 7, tzinfo=UTC),
        extra_headers={"List-Unsubscribe": "<https://x.example/abmelden/t>, <mailto:a@x.example>"},
    )
    return mailer.Envelope(
        mailer.envelope_sender(settings), to, mailer.to_bytes(settings, message), message_id
    )


async def test_pooled_connections_are_reused(plain_mail_settings, smtp_server):
    transport = mailer.SmtpTransport(plain_mail_settings.model_copy(update={"smtp_pool_size": 2}))
    try:
        await asyncio.gather(*(transport.send(_envelope(plain_mail_settings, n)) for n in range(8)))
    finally:
        await transport.close()
    assert len(smtp_server.handler.received) == 8
    assert len(smtp_server.handler.peers) <= 2


async def test_rate_limit_spaces_messages(plain_mail_settings, smtp_server):
    transport = mailer.SmtpTransport(
        plain_mail_settings.model_copy(update={"smtp_max_per_second": 20})
    )
    started = time.monotonic()
    try:
        for n in range(5):
            await transport.send(_envelope(plain_mail_settings, n))
    finally:
        await transport.close()
    # five messages at 20/s need at least four gaps of 50 ms; slowness cannot break this
    assert time.monotonic() - started >= 0.2
    assert len(smtp_server.handler.received) == 5


@pytest.mark.smtp_replies("550")
async def test_permanent_and_temporary_errors_are_told_apart(plain_mail_settings, smtp_server):
    transport = mailer.SmtpTransport(plain_mail_settings)
    try:
        with pytest.raises(mailer.PermanentSendError) as permanent:
            await transport.send(_envelope(plain_mail_settings, 1))
        smtp_server.handler.replies = ["452"]
        with pytest.raises(mailer.TemporarySendError) as temporary:
            await transport.send(_envelope(plain_mail_settings, 2))
        reply = await transport.send(_envelope(plain_mail_settings, 3))
    finally:
        await transport.close()
    assert (permanent.value.code, temporary.value.code) == (550, 452)
    assert reply == "OK queued"  # the recording handler's 250 answer
    assert len(smtp_server.handler.peers) == 1  # the connection survived both refusals


async def test_unreachable_relay_is_a_temporary_error(plain_mail_settings):
    closed = plain_mail_settings.model_copy(update={"smtp_port": 9, "smtp_timeout": 2})
    transport = mailer.SmtpTransport(closed)
    with pytest.raises(mailer.TemporarySendError, match="connection"):
        await transport.send(_envelope(closed, 1))
    await transport.close()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


async def test_starttls_with_login(plain_mail_settings, tmp_path: Path):
    from aiosmtpd.smtp import AuthResult

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = RecordingHandler([])
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"geheim")

    server, port = await start_relay(
        handler,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    settings = plain_mail_settings.model_copy(
        update={
            "smtp_port": port,
            "smtp_security": "starttls",
            "smtp_ca_file": cert,
            "smtp_username": "partnerpost",
            "smtp_password": SecretStr("geheim"),
        }
    )
    transport = mailer.SmtpTransport(settings)
    try:
        await transport.send(_envelope(settings, 1))
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
    assert logins == [(b"partnerpost", b"geheim")]
    assert len(handler.received) == 1


async def test_file_transport_writes_the_exact_bytes(plain_mail_settings, tmp_path):
    transport = mailer.FileTransport(tmp_path / "outbox")
    envelope = _envelope(plain_mail_settings, 7)
    reply = await transport.send(envelope)
    (written,) = (tmp_path / "outbox").glob("*.eml")
    assert written.read_bytes() == envelope.data
    assert reply.startswith("250") and written.name == "test.7_partnerpost.example.org.eml"


async def test_dkim_signature_verifies_against_the_public_key(plain_mail_settings, tmp_path):
    private, public = tmp_path / "dkim.pem", tmp_path / "dkim.pub"
    _openssl("genrsa", "-out", str(private), "2048")
    _openssl("rsa", "-in", str(private), "-pubout", "-outform", "DER", "-out", str(public))
    settings = plain_mail_settings.model_copy(
        update={"dkim_selector": "pp2026", "dkim_private_key_file": private}
    )
    data = _envelope(settings, 1).data
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public.read_bytes())

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"pp2026._domainkey.partnerpost.example.org."
        return record

    assert data.startswith(b"DKIM-Signature: ")
    assert dkim.verify(data, dnsfunc=dns)
    assert not dkim.verify(data.replace(b"Hallo", b"Hallo!"), dnsfunc=dns)


def test_subject_is_rfc2047_encoded_and_headers_are_one_line(plain_mail_settings):
    raw = _envelope(plain_mail_settings, 1).data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    subject = re.search(r"^Subject: (.*(?:\r\n .*)*)", raw, re.MULTILINE).group(1)
    assert subject.startswith("=?utf-8?") and subject.isascii()
    assert str(make_header(decode_header(subject))) == "Test 1 – Übersicht"
    assert "List-Unsubscribe: <https://x.example/abmelden/t>,\r\n <mailto:a@x.example>" in raw


def test_a_name_that_looks_like_an_encoded_word_reads_as_itself(plain_settings):
    message = mailer.compose(
        plain_settings,
        to_name="=?utf-8?q?B=C3=BCrgermeister?=",
        to_address="rathaus@example.org",
        subject="Betreff",
        text="Text",
        html=None,
        message_id="<1@example.org>",
        date=datetime(2026, 11, 23, tzinfo=UTC),
    )
    raw = mailer.to_bytes(plain_settings, message)

    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["To"].addresses[0].display_name == "=?utf-8?q?B=C3=BCrgermeister?="

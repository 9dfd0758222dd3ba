"""What an operator meets at the command line: where the database is, which URL the
feeds link to, a busy port, a stop request. Real subprocesses, as operators run them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.config import Settings

from .conftest import DEMO

PARTNERPOST = str(Path(sys.executable).parent / "partnerpost")
sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


def _run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERPOST_")}
    return subprocess.run(
        [PARTNERPOST, *args], env={**clean, **env}, cwd=cwd, capture_output=True, timeout=120
    )


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "PARTNERPOST_DATABASE_URL": settings.database_url,
        "PARTNERPOST_FEEDS_DIR": str(settings.feeds_dir),
        **extra,
    }


@pytest.mark.parametrize(
    "command",
    [
        ["subscribers", "list"],
        ["articles", "list"],
        ["feeds", "build"],
        ["digest", "run", "--dry-run"],
        ["subscribers", "add", "Stadt Borna", "rathaus@borna.example"],
    ],
)
def test_commands_run_in_the_wrong_folder_create_no_database(tmp_path, command):
    result = _run(tmp_path, *command)

    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "no database at" in stderr
    assert str(tmp_path / "var" / "partnerpost.sqlite3") in stderr.replace("\n", "")
    assert not (tmp_path / "var").exists()


def test_db_upgrade_and_ingest_create_the_database(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _run(tmp_path / "a", "db", "upgrade").returncode == 0
    assert (tmp_path / "a" / "var" / "partnerpost.sqlite3").exists()
    assert _run(tmp_path / "b", "ingest", str(DEMO)).returncode == 0
    listed = _run(tmp_path / "b", "subscribers", "list")
    assert listed.returncode == 0, listed.stderr.decode()


@sqlite_only
def test_feeds_built_for_another_base_url_are_not_overwritten_without_force(settings):
    cwd = settings.feeds_dir.parent
    live = _env(settings, PARTNERPOST_BASE_URL="https://news.example.org")
    stray = _env(settings)  # no PARTNERPOST_BASE_URL: http://127.0.0.1:8000
    assert _run(cwd, "ingest", str(DEMO), **live).returncode == 0
    atom = settings.feeds_dir / "artikel.atom"

    refused = _run(cwd, "feeds", "build", **stray)
    assert refused.returncode == 2
    message = refused.stderr.decode().replace("\n", "")
    assert "'https://news.example.org'" in message
    assert "'http://127.0.0.1:8000'" in message
    assert "--force" in message
    assert "http://127.0.0.1:8000" not in atom.read_text()

    forced = _run(cwd, "feeds", "build", "--force", **stray)
    assert forced.returncode == 0, forced.stderr.decode()
    assert "http://127.0.0.1:8000/artikel/" in atom.read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_second_serve_on_a_busy_port_fails_before_touching_the_store(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(tmp_path, "serve", "--port", str(port))

    assert result.returncode != 0
    assert "address already in use" in result.stderr.decode().lower()
    # The lifespan (migrations, then the scheduler's feed build and digest run) never ran.
    assert not (tmp_path / "var").exists()


def test_serve_links_follow_its_port_and_sigterm_exits_0(tmp_path):
    assert _run(tmp_path, "ingest", str(DEMO)).returncode == 0
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERPOST_")}
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [PARTNERPOST, "serve", "--port", str(port)],
            env=clean,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        front = httpx.get(f"{base}/", timeout=5).text
        form = httpx.get(f"{base}/abonnieren", timeout=5).text
        while time.monotonic() < deadline:
            feed = httpx.get(f"{base}/feeds/artikel.atom", timeout=5)
            if feed.status_code == 200 and f"{base}/artikel/" in feed.text:
                break
            time.sleep(0.2)
        assert f'href="{base}/feeds/artikel.atom"' in front
        assert ":8000" not in front
        assert f'action="{base}/abonnieren"' in form
        assert f"{base}/artikel/" in feed.text

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_log_lines_never_show_a_database_password(settings, capsys):
    import logging

    from service.cli import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(settings)
        url = "postgresql+asyncpg://partnerpost:pw-4711@db:5432/partnerpost"
        logging.getLogger("service.test").error("cannot connect to %s", url)
        try:
            raise ConnectionError(url)
        except ConnectionError:
            logging.getLogger("service.test").exception("failed")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    stderr = capsys.readouterr().err
    assert "postgresql+asyncpg://partnerpost:***@db:5432/partnerpost" in stderr
    assert "pw-4711" not in stderr

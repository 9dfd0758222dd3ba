"""What an operator meets at the command line: where the database is, which URL the
feeds link to, a busy port, a stop request. Real subprocesses, as operators run them."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from .helpers import (
    DEMO,
    environment,
    partnerpost,
    run,
    serve,
    sqlite_only,
    store_env,
    wait_until_blocking,
)


def _run(cwd: Path, *args: str, **env: str):
    return partnerpost(*args, env=environment(env), cwd=cwd)


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
    live = {**store_env(settings), "PARTNERPOST_BASE_URL": "https://news.example.org"}
    stray = store_env(settings)  # no PARTNERPOST_BASE_URL: http://127.0.0.1:8000
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
    with serve(environment({}), tmp_path) as served:
        base = served.url
        front = httpx.get(f"{base}/", timeout=5).text
        form = httpx.get(f"{base}/abonnieren", timeout=5).text

        def feed_links_here() -> bool:
            feed = httpx.get(f"{base}/feeds/artikel.atom", timeout=5)
            return feed.status_code == 200 and f"{base}/artikel/" in feed.text

        wait_until_blocking(feed_links_here, 30, 0.2, "a feed linking to this port")
        assert f'href="{base}/feeds/artikel.atom"' in front
        assert ":8000" not in front
        assert f'action="{base}/abonnieren"' in form

        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0, served.text()


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def test_serve_with_two_workers_forks_two_servers_of_one_port_and_stops_them_all(tmp_path):
    assert _run(tmp_path, "ingest", str(DEMO)).returncode == 0
    with serve(environment({}), tmp_path, "--workers", "2") as served:
        workers = _children(served.process.pid)
        assert len(workers) == 2, served.text()
        answers = [httpx.get(f"{served.url}/", timeout=5).status_code for _ in range(20)]
        assert answers == [200] * 20
        wait_until_blocking(
            lambda: httpx.get(f"{served.url}/feeds/artikel.xml", timeout=5).status_code == 200,
            30,
            0.2,
            "the feed from both workers",
        )
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0, served.text()
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def _gone(pids: set[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def _two_workers(tmp_path: Path, group: bool = False):
    assert _run(tmp_path, "ingest", str(DEMO)).returncode == 0
    return serve(environment({}), tmp_path, "--workers", "2", group=group)


def test_workers_of_a_killed_serve_stop_too(tmp_path):
    """Regression: a SIGKILLed parent left its workers serving the port as orphans."""
    with _two_workers(tmp_path) as served:
        workers = _children(served.process.pid)
        served.process.kill()
        served.process.wait()
        wait_until_blocking(lambda: _gone(workers), 30, 0.2, "the orphaned workers' end")


def test_a_worker_that_dies_stops_serve_with_its_failure(tmp_path):
    """Regression: a worker killed (the OOM killer, a crash) left serve running on fewer
    workers without a word, and exiting 247 when stopped at last."""
    with _two_workers(tmp_path) as served:
        first, second = sorted(_children(served.process.pid))
        os.kill(first, signal.SIGKILL)
        assert served.process.wait(timeout=30) == 128 + signal.SIGKILL, served.text()
        wait_until_blocking(lambda: _gone({second}), 30, 0.2, "the other worker's end")
    assert "worker" in served.text() and str(first) in served.text()


def test_ctrl_c_stops_every_worker_gracefully(tmp_path):
    """Regression: Ctrl-C signals the whole process group, so each worker got SIGINT from
    the terminal and again from serve: uvicorn took the second as 'force exit' and cut
    the app's shutdown short (a CancelledError in the lifespan)."""
    with _two_workers(tmp_path, group=True) as served:
        # Both started: a stop during a worker's startup cancels the startup, rightly.
        wait_until_blocking(
            lambda: served.text().count("Application startup complete") == 2,
            30,
            0.1,
            "both workers' startup",
        )
        os.killpg(served.process.pid, signal.SIGINT)
        assert served.process.wait(timeout=30) == 0, served.text()
    log = served.text()
    assert log.count("Application shutdown complete") == 2, log
    assert "CancelledError" not in log


def test_log_lines_never_show_a_database_password(plain_settings, capsys):
    import logging

    from service.cli import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(plain_settings)
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


@sqlite_only
def test_verbose_before_the_command_logs_debug_lines(settings):
    quiet = run(settings, "db", "upgrade")
    verbose = run(settings, "-v", "db", "upgrade")

    assert quiet.returncode == verbose.returncode == 0
    assert " DEBUG " not in quiet.stderr.decode()
    assert " DEBUG " in verbose.stderr.decode()

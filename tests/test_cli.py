"""The `partnerpost` command, run as a real subprocess the way operators run it."""

from __future__ import annotations

import http.server
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .helpers import DEMO, cli_env, run, serve, sqlite_only


def test_demo_import_twice_imports_nothing_twice(settings):
    first = run(settings, "ingest", str(DEMO))
    second = run(settings, "ingest", str(DEMO))

    assert first.returncode == 0, first.stderr.decode()
    assert b"10 new, 0 updated, 0 unchanged, 0 rejected" in first.stdout
    assert second.returncode == 0
    assert b"0 new, 0 updated, 10 unchanged, 0 rejected" in second.stdout
    assert (settings.feeds_dir / "artikel.atom").exists()
    listed = run(settings, "articles", "list", "--limit", "100")
    assert listed.returncode == 0
    assert "Leipzig – Kyjiw" in listed.stdout.decode()


@sqlite_only
def test_rejected_items_are_named_and_exit_code_is_1(settings, tmp_path):
    listing = tmp_path / "listing.txt"
    listing.write_text(
        "Titel gut\n\nBonn, 1. März 2024. Gut.\n\n"
        "Titel schlecht\n\nBonn, 2. Mürz 2024. Schlecht.\n",
        encoding="utf-8",
    )
    result = run(settings, "ingest", str(listing))

    assert result.returncode == 1
    assert b"1 new, 0 updated, 0 unchanged, 1 rejected" in result.stdout
    assert f"{listing}:line 7: 'Titel schlecht': unknown month 'Mürz'" in result.stderr.decode()


@sqlite_only
def test_unreadable_input_exits_2_with_the_reason(settings, tmp_path):
    broken = tmp_path / "articles.json"
    broken.write_text('[{"title": ', encoding="utf-8")

    result = run(settings, "ingest", str(broken))
    missing = run(settings, "ingest", str(tmp_path / "nope.txt"))

    assert result.returncode == 2
    assert "invalid JSON at line 1" in result.stderr.decode()
    assert missing.returncode == 2
    assert "No such file or directory" in missing.stderr.decode()


@sqlite_only
def test_ingest_reads_standard_input(settings):
    result = run(settings, "ingest", "-", stdin=DEMO.read_bytes())
    assert result.returncode == 0
    assert b"10 new" in result.stdout


@pytest.fixture
def listing_site(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server standing in for the agency's site (the internet is not here)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "liste.txt").write_bytes(DEMO.read_bytes())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@sqlite_only
def test_ingest_fetches_a_url(settings, listing_site):
    result = run(settings, "ingest", f"{listing_site}/liste.txt")
    gone = run(settings, "ingest", f"{listing_site}/fehlt.txt")

    assert result.returncode == 0, result.stderr.decode()
    assert b"10 new" in result.stdout
    assert gone.returncode == 2
    assert "404" in gone.stderr.decode()


@sqlite_only
def test_db_upgrade_and_feeds_build(settings):
    assert run(settings, "db", "upgrade").returncode == 0
    built = run(settings, "feeds", "build")
    assert built.returncode == 0
    assert b"3 written" in built.stdout
    again = run(settings, "feeds", "build")
    assert b"0 written, 3 unchanged" in again.stdout


def test_bad_configuration_names_the_variable(plain_settings):
    result = run(plain_settings, "db", "upgrade", PARTNERPOST_DATABASE_URL="mysql://db/x")
    assert result.returncode == 2
    assert "PARTNERPOST_DATABASE_URL='mysql://db/x'" in result.stderr.decode()


def test_unreachable_database_is_a_clear_error(plain_settings):
    result = run(
        plain_settings,
        "db",
        "upgrade",
        PARTNERPOST_DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:9/none",
    )
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr.decode()


@sqlite_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_answers_and_exits_0_after_a_graceful_stop_on_a_signal(settings, signum):
    assert run(settings, "ingest", str(DEMO)).returncode == 0
    with serve(cli_env(settings), settings.feeds_dir.parent) as served:
        health = httpx.get(f"{served.url}/healthz", timeout=5)
        assert health.status_code == 200
        page = httpx.get(f"{served.url}/", timeout=5)
        assert "Leipzig – Kyjiw" in page.text
        served.process.send_signal(signum)
        assert served.process.wait(timeout=15) == 0, served.text()
    assert "Application shutdown complete" in served.text()


# --- hostile and foreign input (issue 8, finding 14) ------------------------------------


@sqlite_only
def test_ingest_of_json_nested_100000_deep_exits_2_with_a_clear_error(settings, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100_000)

    result = run(settings, "ingest", str(deep))

    assert result.returncode == 2
    assert "JSON nested too deeply" in result.stderr.decode()
    assert b"Traceback" not in result.stderr


@sqlite_only
def test_ingest_rejects_an_ndjson_line_nested_too_deep_and_imports_the_others(settings, tmp_path):
    good = '{"title": "Gut", "teaser": "Gut.", "place": "Bonn", "published": "2024-03-01"}'
    lines = tmp_path / "articles.ndjson"
    lines.write_text(f"{good}\n{'[' * 100_000}\n", encoding="utf-8")

    result = run(settings, "ingest", str(lines))

    assert result.returncode == 1
    assert b"1 new" in result.stdout
    assert f"{lines}:line 2: JSON line: JSON nested too deeply" in result.stderr.decode()


EXCEL_ROWS = "name,email,partner\nStadt Görlitz,rathaus@goerlitz.example.org,Tscherkassy\n"


@sqlite_only
@pytest.mark.parametrize(
    ("encoded", "note"),
    [
        (EXCEL_ROWS.encode("cp1252"), "is not UTF-8: read it as cp1252"),
        (EXCEL_ROWS.encode("utf-8-sig"), None),
        (EXCEL_ROWS.encode("utf-8"), None),
    ],
    ids=["excel-csv-cp1252", "excel-csv-utf8-bom", "utf8"],
)
def test_subscribers_import_reads_what_excel_saves(settings, tmp_path, encoded, note):
    assert run(settings, "db", "upgrade").returncode == 0  # import creates no database
    table = tmp_path / "kommunen.csv"
    table.write_bytes(encoded)

    # A real secret, so the only stderr line can be the one about the encoding.
    result = run(settings, "subscribers", "import", str(table), PARTNERPOST_SECRET_KEY="k" * 40)
    listed = run(settings, "subscribers", "list")

    assert result.returncode == 0, result.stderr.decode()
    assert b"1 added" in result.stdout
    assert (note in result.stderr.decode()) if note else result.stderr == b""
    assert "Stadt Görlitz" in listed.stdout.decode()
    assert "GÃ¶rlitz" not in listed.stdout.decode()


@sqlite_only
def test_subscribers_import_takes_the_encoding_it_is_told(settings, tmp_path):
    assert run(settings, "db", "upgrade").returncode == 0  # import creates no database
    table = tmp_path / "kommunen.csv"
    table.write_bytes(EXCEL_ROWS.encode("cp1252"))

    wrong = run(settings, "subscribers", "import", str(table), "--encoding", "utf-8")
    unknown = run(settings, "subscribers", "import", str(table), "--encoding", "klingonisch")
    right = run(settings, "subscribers", "import", str(table), "--encoding", "latin-1")

    assert wrong.returncode == 2
    assert "not utf-8 (byte 0xf6 at offset 26); name the file's encoding with --encoding" in (
        wrong.stderr.decode()
    )
    assert unknown.returncode == 2
    assert "unknown encoding 'klingonisch'" in unknown.stderr.decode()
    assert b"Traceback" not in wrong.stderr + unknown.stderr
    assert right.returncode == 0, right.stderr.decode()
    assert b"1 added" in right.stdout


@sqlite_only
def test_subscribers_import_of_an_unreadable_csv_exits_2_and_imports_nothing(settings, tmp_path):
    assert run(settings, "db", "upgrade").returncode == 0  # import creates no database
    table = tmp_path / "kommunen.csv"
    huge_field = "x" * 200_000
    table.write_text(
        f'name,email\nStadt Borna,a@borna.example.org\n"{huge_field}",b@example.org\n',
        encoding="utf-8",
    )

    # A real secret, so the only stderr line can be the one about the encoding.
    result = run(settings, "subscribers", "import", str(table), PARTNERPOST_SECRET_KEY="k" * 40)
    listed = run(settings, "subscribers", "list")

    assert result.returncode == 2
    assert f"{table}': after line 2: field larger than field limit" in result.stderr.decode()
    assert b"Traceback" not in result.stderr
    assert "Stadt Borna" not in listed.stdout.decode()


@sqlite_only
def test_ingest_warns_of_two_items_with_one_key_naming_both_lines(settings, tmp_path):
    item = {
        "key": "k-1",
        "title": "Eins",
        "teaser": "T",
        "place": "Bonn",
        "published": "2024-05-01",
    }
    lines = tmp_path / "articles.ndjson"
    lines.write_text(
        json.dumps(item) + "\n" + json.dumps({**item, "title": "Zwei"}) + "\n", encoding="utf-8"
    )

    result = run(settings, "ingest", str(lines))

    assert result.returncode == 0, result.stderr.decode()
    assert b"1 new, 0 updated" in result.stdout
    assert (
        f"warning {lines}:line 2: same key 'k-1' as line 1; line 2 is imported, line 1 is not"
        in result.stderr.decode()
    )

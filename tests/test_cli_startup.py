"""What `partnerpost` loads to start: help needs typer and rich, never the database, the web
app, feeds or templates; a command imports what it uses when it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service import store
from service.cli import deliveries as deliveries_commands
from service.cli import sources as sources_commands
from service.sources.parse import FORMATS

from .helpers import ROOT, environment

# Not pydantic: typer itself loads it to check the options of any command it runs.
HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "feedgen", "jinja2", "lxml")

# Runs the app as the console script does and prints the top-level packages then loaded.
_LOADED = """
import json, sys
from service.cli import main
sys.argv = ["partnerpost", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
print(json.dumps(sorted(name for name in sys.modules if name.startswith("service."))))
"""


def _loaded(*args: str, cwd: Path = ROOT) -> tuple[set[str], set[str]]:
    """The top-level packages and our modules loaded by `partnerpost ARGS`."""
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, *args],
        env=environment({}),
        cwd=cwd,
        capture_output=True,
        check=True,
    )
    packages, ours = result.stdout.decode().splitlines()[-2:]
    return set(json.loads(packages)), set(json.loads(ours))


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        [],
        ["db", "--help"],
        ["deliveries", "--help"],
        ["sources", "add", "--help"],
        ["ingest", "--help"],
        ["serve", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_no_database_web_feed_or_template_code(args):
    packages, ours = _loaded(*args)

    assert "typer" in packages
    assert packages.isdisjoint(HEAVY), sorted(packages & set(HEAVY))
    assert {m for m in ours if not m.startswith("service.cli")} <= {"service.errors"}


def test_a_command_imports_what_it_uses_when_it_runs(tmp_path):
    # No database in tmp_path: the command reads the settings, looks, and exits 2.
    packages, ours = _loaded("articles", "list", cwd=tmp_path)

    assert "service.config" in ours
    assert "sqlalchemy" in packages
    assert list(tmp_path.iterdir()) == []


def test_help_texts_name_the_choices_the_store_and_parser_accept():
    assert deliveries_commands.DELIVERY_STATES == store.DELIVERY_STATES
    assert deliveries_commands.RETRYING == store.RETRYING
    assert sources_commands.FORMATS == FORMATS


def test_lazy_module_imports_on_first_use_and_names_itself():
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from service.cli.common import lazy; m = lazy('service.slugs');"
            "print('service.slugs' in sys.modules, repr(m), m.slugify('Ä b'),"
            " 'service.slugs' in sys.modules)",
        ],
        env=environment({}),
        capture_output=True,
        check=True,
    )
    assert probe.stdout.decode().split() == [
        "False",
        "<lazy",
        "module",
        "'service.slugs'>",
        "ae-b",
        "True",
    ]

"""The benchmarks in bench/ keep running: each at a toy size, printing well-formed rows.

No assertion here is about speed (the suite runs on shared, noisy machines); `make bench`
measures. What can fail: a script that crashes, hangs, prints no row, or a row whose figures
do not add up (a missing floor with a ratio, a ratio goal without a ratio, a ratio that is not
value/floor or floor/value).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The Debian packages the floors come from (`.ci/run` installs them).
TOOLS = {"nginx": "nginx-light", "wrk": "wrk", "smtp-sink": "postfix"}


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run_all", ROOT / "bench" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()


def _require_tools() -> None:
    missing = [
        package
        for tool, package in TOOLS.items()
        if not (shutil.which(tool) or Path("/usr/sbin", tool).exists())
    ]
    if not missing:
        return
    message = f"benchmark floors need: apt-get install {' '.join(missing)}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.parametrize("name", RUNNER.SCRIPTS)
def test_benchmark_runs_at_a_tiny_size(name: str) -> None:
    _require_tools()
    rows = RUNNER.run_script(name, tiny=True)
    assert rows, f"bench/{name}.py printed no row"
    for row in rows:
        assert row["bench"] == name
        assert row["work"] and row["unit"] and row["goal"]
        assert isinstance(row["value"], int | float) and row["value"] > 0, row
        assert isinstance(row["met"], bool)
        ratio = row["ratio"]
        if row["floor"] is None:
            assert ratio is None, row
            continue
        # A floor may be given for reference only, when the goal is an absolute figure.
        assert row["floor"] > 0 and row["floor_name"], row
        if ratio is None:
            assert "ratio" not in row["goal"], row
            continue
        assert ratio > 0
        assert math.isclose(ratio, row["value"] / row["floor"], rel_tol=0.02) or math.isclose(
            ratio, row["floor"] / row["value"], rel_tol=0.02
        ), row


def test_the_table_lists_every_row_with_its_goal() -> None:
    rows = [
        {
            "bench": "serve_feed",
            "work": "serve /feeds/artikel.xml",
            "value": 40123.4,
            "unit": "req/s",
            "floor": 70000.0,
            "floor_name": "nginx",
            "ratio": 0.573,
            "goal": "ratio >= 0.5",
            "met": True,
        },
        {
            "bench": "cli_start",
            "work": "partnerpost --help",
            "value": 0.21,
            "unit": "s",
            "floor": None,
            "floor_name": None,
            "ratio": None,
            "goal": "value < 0.25 s",
            "met": False,
        },
    ]
    table = RUNNER.render_table(rows)
    assert "| serve /feeds/artikel.xml | 40,123 req/s | nginx: 70,000 req/s | 0.57 |" in table
    assert "| partnerpost --help | 0.210 s | – | – | value < 0.25 s | no |" in table
    printed = "noise\n" + "\n".join(json.dumps(row) for row in rows) + "\n{bad"
    assert RUNNER.parse_rows(printed) == rows


def test_a_new_table_keeps_what_was_written_around_the_old_one() -> None:
    row = {
        "bench": "ingest",
        "work": "ingest 10,000 articles",
        "value": 6000.0,
        "unit": "articles/s",
        "floor": None,
        "floor_name": None,
        "ratio": None,
        "goal": "value >= 5000",
        "met": True,
    }
    first = RUNNER.render_document([row], 12.0, None)
    edited = first.replace("# Performance\n", "# Performance\n\nIntro by hand.\n") + "\nBounds.\n"
    second = RUNNER.render_document([{**row, "value": 7000.0}], 13.0, edited)
    assert "Intro by hand." in second and second.endswith("\nBounds.\n")
    assert "7,000 articles/s" in second and "6,000 articles/s" not in second
    assert second.count(RUNNER.TABLE_START) == 1


def test_make_bench_runs_every_script_in_the_table_order() -> None:
    scripts = sorted(p.stem for p in (ROOT / "bench").glob("*.py"))
    assert set(RUNNER.SCRIPTS) <= set(scripts)
    help_text = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_all.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--tiny" in help_text

"""Run every performance benchmark and write the table to docs/PERFORMANCE.md.

    .venv/bin/python bench/run_all.py [--tiny] [--only NAME ...] [--output docs/PERFORMANCE.md]

Each script in SCRIPTS runs as a subprocess of its own, measures its floor (nginx, smtp-sink,
feedgen or aiosmtplib alone, a bare interpreter) in the same run, and prints one JSON object
per table row on stdout (the last line is the script's main row). This runner collects the
rows in order and renders them with the method below. `--tiny` runs each at a toy size (what
the test suite checks); the figures of a tiny run mean nothing and it writes no file unless
`--output` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# In the order of the table.
SCRIPTS = [
    "serve_feed",
    "render_page",
    "feed_build",
    "municipality_feeds",
    "digest_send",
    "cli_start",
    "ingest",
]
ROW_KEYS = {"bench", "work", "value", "unit", "floor", "floor_name", "ratio", "goal", "met"}
TIMEOUT_SECONDS = 900

METHOD = """\
## Method

Every benchmark runs its floor in the same process run as the measured work, on the same
machine, alternating floor and measured rounds, and reports medians: the machines are shared
and noisy, so a ratio against a floor measured a minute earlier says more than an absolute
figure. Floors: nginx (Debian's `nginx-light`) serving the same bytes for the HTTP rows, with
`wrk` as the client; feedgen alone for the feed build; aiosmtplib alone for sending, into
postfix's `smtp-sink`; a bare `python -c pass` for the CLI start. Each script's docstring says
exactly what it runs; `make bench` runs them all (a few minutes) and rewrites the table
above, keeping the rest of this file.
The test suite runs each script once at a toy size (`--tiny`) to keep them working; no test
asserts a time.
"""


def run_script(name: str, *, tiny: bool) -> list[dict[str, Any]]:
    """The rows one script printed; raises with its output when it fails."""
    command = [sys.executable, str(ROOT / "bench" / f"{name}.py")] + (["--tiny"] if tiny else [])
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, cwd=ROOT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"bench/{name}.py exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    rows = parse_rows(result.stdout)
    if not rows:
        raise RuntimeError(f"bench/{name}.py printed no JSON row:\n{result.stdout}")
    return rows


def parse_rows(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects among a script's output lines that carry every row key."""
    rows = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and ROW_KEYS <= row.keys():
            rows.append(row)
    return rows


def _figure(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        text = f"{value:,.3f}" if value < 10 else f"{value:,.0f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def _met(row: dict[str, Any]) -> str:
    """yes/no against the row's goal; a row for reference only has none."""
    if str(row["goal"]).startswith("–"):
        return "–"
    return "yes" if row["met"] else "no"


def render_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| work | partnerpost | floor | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        floor = row["floor"]
        floor_text = "–" if floor is None else f"{row['floor_name']}: {_figure(floor, row['unit'])}"
        ratio = "–" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(
            f"| {row['work']} | {_figure(row['value'], row['unit'])} | {floor_text} | {ratio} "
            f"| {row['goal']} | {_met(row)} |"
        )
    return "\n".join(lines)


TABLE_START = "<!-- bench table: written by `make bench` -->"
TABLE_END = "<!-- end of bench table -->"


def render_measurement(rows: list[dict[str, Any]], seconds: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return (
        f"{TABLE_START}\n"
        f"Measured {when} on {machine} by `make bench` ({seconds:.0f} s in all).\n\n"
        f"{render_table(rows)}\n{TABLE_END}"
    )


def render_document(rows: list[dict[str, Any]], seconds: float, previous: str | None) -> str:
    """The document with a fresh table; what was written around the table is kept."""
    measurement = render_measurement(rows, seconds)
    if previous and TABLE_START in previous and TABLE_END in previous:
        before, rest = previous.split(TABLE_START, 1)
        return before + measurement + rest.split(TABLE_END, 1)[1]
    return f"# Performance\n\n{measurement}\n\n{METHOD}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes: checks the scripts run")
    parser.add_argument("--only", nargs="*", default=SCRIPTS, choices=SCRIPTS, metavar="NAME")
    parser.add_argument("--output", type=Path, help="where the table goes")
    arguments = parser.parse_args()
    output = arguments.output or (None if arguments.tiny else ROOT / "docs" / "PERFORMANCE.md")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in arguments.only:
        print(f"bench/{name}.py ...", file=sys.stderr, flush=True)
        for row in run_script(name, tiny=arguments.tiny):
            print(json.dumps(row, ensure_ascii=False), flush=True)
            rows.append(row)
    if output is not None:
        previous = output.read_text(encoding="utf-8") if output.exists() else None
        document = render_document(rows, time.perf_counter() - started, previous)
        output.write_text(document, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()

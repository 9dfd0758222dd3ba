"""Benchmark: how long `partnerpost --help` takes, as an operator starts it.

    .venv/bin/python bench/cli_start.py [--tiny]

Wall time of the console script to its end, repeated; the floor is `python -c pass` with
the same interpreter, measured in alternating rounds. Goal (issue 13): median < 0.25 s.
Rows before the last line: a group's help (`db --help`) and a command's help
(`ingest --help`), which import no more than the top-level help.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GOAL_SECONDS = 0.25


def _seconds(command: Sequence[str], env: dict[str, str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _row(
    work: str, values: list[float], floor: list[float], rounds: int, size: str, goal: bool
) -> dict:
    value = statistics.median(values)
    floor_value = statistics.median(floor)
    return {
        "bench": "cli_start",
        "work": work,
        "value": round(value, 4),
        "unit": "s",
        "floor": round(floor_value, 4),
        "floor_name": f"python -c pass (Python {sys.version.split()[0]})",
        "ratio": float(f"{value / floor_value:.3g}"),
        "goal": f"value < {GOAL_SECONDS}" if goal else "– (for reference)",
        "met": value < GOAL_SECONDS,
        "rounds": rounds,
        "size": size,
    }


def main(tiny: bool) -> None:
    rounds, runs = (1, 5) if tiny else (3, 10)
    commands = {
        "partnerpost --help": [str(BIN / "partnerpost"), "--help"],
        "partnerpost db --help": [str(BIN / "partnerpost"), "db", "--help"],
        "partnerpost ingest --help": [str(BIN / "partnerpost"), "ingest", "--help"],
    }
    floor_command = [sys.executable, "-c", "pass"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    floor: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        # A folder of its own: no .env of the checkout is read.
        env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
        for command in commands.values():  # warm the file cache and the bytecode once
            _seconds(command, env, folder)
        for _ in range(rounds):
            floor += [_seconds(floor_command, env, folder) for _ in range(runs)]
            for name, command in commands.items():
                times[name] += [_seconds(command, env, folder) for _ in range(runs)]
    size = f"{rounds * runs} runs each"
    rows = [
        _row(name, values, floor, rounds, size, goal=name == "partnerpost --help")
        for name, values in times.items()
    ]
    # The table's row (the top-level help) comes last.
    for row in [*rows[1:], rows[0]]:
        print(json.dumps(row))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="One short round (for the tests).")
    main(parser.parse_args().tiny)

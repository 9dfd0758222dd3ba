"""Benchmark: `GET /` (the rendered start page) from `partnerpost serve`, with nginx serving
the same page's bytes for reference, in the same run.

    .venv/bin/python bench/render_page.py [--tiny] [--rounds 3] [--seconds 5]

wrk with 32 connections and 2 threads; rounds alternate nginx and partnerpost. Goal
(issue 13): at least 2,000 requests per second (the page cached until articles change).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.http import (
    nginx,
    partnerpost_serve,
    prepare_store,
    row,
    wait_for_ok,
    wrk,
)

GOAL = 2000.0


def main(rounds: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        env = prepare_store(folder, 0)
        with partnerpost_serve(env, folder) as served:
            page = wait_for_ok(served + "/")
            root = folder / "static"
            root.mkdir()
            (root / "index.html").write_bytes(page.content)
            values: list[float] = []
            floors: list[float] = []
            with nginx(root, folder) as floor_url:
                for _ in range(rounds):
                    floors.append(wrk(floor_url + "/", seconds))
                    values.append(wrk(served + "/", seconds))
        size = f"demo start page ({len(page.content) / 1000:.1f} KB), wrk -c32 -t2 -d{seconds:g}s"
        result = row(
            "render_page",
            "render / (start page), 32 connections",
            values,
            floors,
            "value >= 2000 req/s",
            False,
            size,
        )
        result["ratio"] = None  # the goal is a rate; nginx is shown for reference
        result["met"] = float(str(result["value"])) >= GOAL
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="one short round (for tests)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    arguments = parser.parse_args()
    if arguments.tiny:
        main(1, 1)
    else:
        main(arguments.rounds, arguments.seconds)

"""The crash-consistency benchmark, at a tiny size, so the script cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

from .helpers import ROOT


def test_killed_runs_are_completed_by_reruns_with_at_most_one_duplicate_per_connection():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "crash_consistency.py"),
            "--kills",
            "2",
            "--addresses",
            "30",
            "--pool",
            "2",
            "--seed",
            "7",
        ],
        capture_output=True,
        timeout=300,
        cwd=ROOT,
    )

    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    figures = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert figures["ok"] and figures["kills"] == 2
    assert figures["missing"] == 0 and figures["rerun_failures"] == 0
    assert figures["max_duplicates_per_kill"] <= 2
    assert figures["messages"] == figures["rounds"] * 30 + figures["duplicates"]

"""`python -m bench floor` runs end to end: both stand-in servers answer, a row each (numbers are
not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_floor_bench_prints_a_row_per_stand_in_server():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "floor", "--seconds", "0.3", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for server in ("asgi", "litestar"):
        row = re.search(
            rf"^\| {server} \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \| (\d+) \|$",
            done.stdout,
            re.MULTILINE,
        )
        assert row is not None, done.stdout
        assert float(row.group(1)) > 0 and int(row.group(3)) > 0  # a p50, and requests answered
